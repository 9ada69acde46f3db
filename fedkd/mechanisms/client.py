"""The client's reply pipeline: each mechanism's ``privatize`` step, then the uplink codec."""

from __future__ import annotations

from typing import Any

import numpy as np

from fedkd.compress import Codec, get_codec
from fedkd.config import Config
from fedkd.mechanisms.registry import mechanism_classes


def codec_name(cfg: Config) -> str:
    """The uplink codec of the run: the one a mechanism needs, else ``distill.codec``."""
    for cls in mechanism_classes(cfg.privacy.mechanisms):
        name = cls.codec(cfg)
        if name is not None:
            return name
    return cfg.distill.codec


def codec_for(cfg: Config) -> Codec:
    """The uplink codec both sides use: the one a mechanism needs (PATE: one-hot votes),
    else ``distill.codec`` (``topk`` with ``distill.topk``)."""
    name = codec_name(cfg)
    if name == "topk":
        return get_codec("topk", k=cfg.distill.topk)
    return get_codec(name)


def privatize(cfg: Config, probs: np.ndarray) -> np.ndarray:
    """The (M, C) predictions after every mechanism's client-side step, in order."""
    for cls in mechanism_classes(cfg.privacy.mechanisms):
        probs = cls.privatize(cfg, probs)
    return probs


def encode_reply(cfg: Config, probs: np.ndarray) -> dict[str, np.ndarray]:
    """privatize -> encode: the arrays of the reply's ``predictions`` record."""
    return codec_for(cfg).encode(privatize(cfg, probs))


def device_request(cfg: Config, num_examples: int) -> dict[str, Any]:
    """Every mechanism's items for the device floor's ``check_request`` (may raise)."""
    items: dict[str, Any] = {}
    for cls in mechanism_classes(cfg.privacy.mechanisms):
        items.update(cls.device_request(cfg, num_examples))
    return items


def device_accountants(cfg: Config) -> list[str]:
    """Names of the run's mechanisms whose device accountant must survive restarts."""
    return [c.name for c in mechanism_classes(cfg.privacy.mechanisms) if c.keeps_device_accountant]


def revisit(cfg: Config, step: Any) -> tuple[float, Any, dict[str, float]] | None:
    """The first mechanism's own private training of ``step``, or None (train plainly)."""
    for cls in mechanism_classes(cfg.privacy.mechanisms):
        out = cls.revisit(cfg, step)
        if out is not None:
            return out
    return None
