"""Shared plumbing of the baselines: data, run directory rows, summaries, byte counting."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fedkd.simulations.localgrid import LocalGrid
from flwr.app import Message

from fedkd.clientdata import partitions_for, splits_for
from fedkd.config import Config, ConfigError
from fedkd.features import build_client_model, feature_args, on_features
from fedkd.protocol import record_dict_bytes
from fedkd.rundir import RunDir, prepare
from fedkd.validation import final_val

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BaselineData:
    """The run's splits seen by a baseline: pooled private data, partitions, test set, and
    the validation split (empty without ``data.validation_fraction``)."""

    x_private: np.ndarray
    y_private: np.ndarray
    parts: tuple[np.ndarray, ...]
    x_test: np.ndarray
    y_test: np.ndarray
    input_shape: tuple[int, ...]
    num_classes: int
    x_val: np.ndarray
    y_val: np.ndarray


def load_data(cfg: Config) -> BaselineData:
    """Splits and client partitions of ``cfg`` (the same ones fedkd's clients get).

    Parameters
    ----------
    cfg : Config
        The run configuration (``data``, ``seed``, ``clients.num_clients``).

    Returns
    -------
    BaselineData
        Pooled private data (the union of all client partitions), the partitions, test
        and validation sets.
    """
    splits = splits_for(cfg.data, cfg.seed)
    parts = partitions_for(cfg.data, cfg.seed, cfg.clients.num_clients)
    pooled = np.concatenate([np.asarray(p, dtype=np.int64) for p in parts])
    return BaselineData(
        x_private=splits.x_private[pooled],
        y_private=splits.y_private[pooled],
        parts=parts,
        x_test=splits.x_test,
        y_test=splits.y_test,
        input_shape=tuple(splits.input_shape),
        num_classes=int(splits.num_classes),
        x_val=splits.x_val,
        y_val=splits.y_val,
    )


def model_on_features(
    cfg: Config,
    name: str,
    section: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    seed: int,
    *arrays: np.ndarray,
) -> tuple[torch.nn.Module, list[np.ndarray]]:
    """Architecture ``name`` on the fixed public features of ``cfg.<section>``, and its inputs.

    With ``<section>.feature_map`` or ``<section>.public_features`` set, the fixed feature
    map (fitted on the public proxy, as in fedkd) is applied to ``arrays`` (cached per
    process) and the returned model is the trainable head: only its weights are trained,
    and only they travel in FedAvg. Otherwise the plain model and ``arrays`` unchanged.

    Parameters
    ----------
    cfg : Config
        The run configuration (its ``data`` and ``seed`` give the public proxy).
    name : str
        A registered model name.
    section : str
        ``"clients"`` or ``"distill"``: whose feature keys apply (and name errors).
    input_shape, num_classes, seed
        As for :func:`fedkd.features.build_client_model`.
    *arrays : np.ndarray
        Inputs to map, e.g. training and test images.

    Returns
    -------
    tuple
        ``(model, [features of each array])``.
    """
    keys = feature_args(getattr(cfg, section), section)
    x_public = splits_for(cfg.data, cfg.seed).x_proxy if keys["public_features"] else None
    model = build_client_model(name, input_shape, num_classes, seed=seed, x_public=x_public, **keys)
    return on_features(model, *arrays)


class GroupStandardize(torch.nn.Module):
    """Parameter-free GroupNorm on flat inputs: ``groups`` contiguous blocks, each
    standardised per example (mean 0, variance 1, ``eps`` as ``nn.GroupNorm``).

    On a channel-major flattening of ``(C, H, W)`` features with ``C`` divisible by
    ``groups`` this is ``nn.GroupNorm(groups, C, affine=False)``: Tramèr & Boneh,
    "Differentially Private Learning Needs Better Features (or Much More Data)", ICLR
    2021, put GroupNorm(27, 81) without affine parameters on the 81x7x7 scattering
    features of Fashion-MNIST before the linear layer. It mixes nothing across examples
    and has no weights, so it costs no privacy.
    """

    def __init__(self, groups: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.groups, self.eps = int(groups), float(eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(x.shape[0], self.groups, -1)
        out = torch.nn.functional.group_norm(flat, self.groups, eps=self.eps)
        return out.reshape(x.shape)


def with_group_norm(head: torch.nn.Module, groups: int, width: int) -> torch.nn.Module:
    """``head`` behind :class:`GroupStandardize` (``distill.group_norm``); ``head`` if 0.

    Raises
    ------
    ConfigError
        If the input width is not a multiple of ``groups``.
    """
    if groups == 0:
        return head
    if width % groups:
        raise ConfigError(
            f"distill.group_norm={groups} must divide the student's input width {width}"
        )
    return torch.nn.Sequential(GroupStandardize(groups), head)


def central_student(cfg: Config, data: BaselineData) -> tuple[torch.nn.Module, BaselineData]:
    """The student architecture for the centralised baselines, on its public features.

    With ``distill.feature_map`` or ``distill.public_features`` set, the fixed feature map
    (fitted on the public proxy, as fedkd's student) is applied once to the pooled private
    data, the test and the validation set, and the returned model is the trainable head.
    With ``distill.group_norm`` = g > 0 the head sees its inputs through a parameter-free
    GroupNorm with g groups (:class:`GroupStandardize`).
    """
    net, (x_private, x_test, x_val) = model_on_features(
        cfg,
        cfg.distill.student,
        "distill",
        data.input_shape,
        data.num_classes,
        cfg.seed,
        data.x_private,
        data.x_test,
        data.x_val,
    )
    width = int(np.prod(x_test.shape[1:]))
    net = with_group_norm(net, cfg.distill.group_norm, width)
    if x_test is data.x_test:
        return net, data
    return net, replace(
        data,
        x_private=x_private,
        x_test=x_test,
        x_val=x_val,
        input_shape=tuple(x_test.shape[1:]),
    )


def generator(seed: int, *stream: int) -> torch.Generator:
    """A torch generator seeded from ``seed`` and a stream path (deterministic)."""
    mixed = int(np.random.SeedSequence([int(seed), *[int(s) for s in stream]]).generate_state(1)[0])
    return torch.Generator().manual_seed(mixed)


@dataclass
class Recorder:
    """Collects per-round rows of a baseline run and writes them like fedkd does.

    Rows carry the keys of fedkd's ``metrics.json`` (``round``, ``student_accuracy``,
    ``student_loss``, ``teacher_accuracy``, ``bytes_up``, ``bytes_down``,
    ``bytes_up_per_client``, ``clients``, ``seconds`` and ``epsilon_*``), so the sweep
    reads every method the same way.
    """

    run: RunDir
    method: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    t_start: float = field(default_factory=time.monotonic)
    _t_last: float = field(default_factory=time.monotonic)

    def add(self, row: dict[str, Any]) -> None:
        """Append one round's row (``seconds`` is filled in) and rewrite the metrics files."""
        now = time.monotonic()
        full = {
            "teacher_accuracy": float("nan"),
            "bytes_up": 0,
            "bytes_down": 0,
            "bytes_up_per_client": {},
            "clients": 0,
            "dropped": 0,
            "seconds": round(now - self._t_last, 3),
            **row,
        }
        self._t_last = now
        self.rows.append(full)
        self.run.write_metrics(self.rows, {"method": self.method})
        logger.info(
            "%s round %d  acc %.4f  up %d B  down %d B%s",
            self.method,
            full["round"],
            full["student_accuracy"],
            full["bytes_up"],
            full["bytes_down"],
            "".join(f"  {k} {v:.3f}" for k, v in full.items() if k.startswith("epsilon_")),
        )

    def finish(self, extra: dict[str, Any] | None = None, stopped: str | None = None) -> dict:
        """Write ``DONE`` with the summary (same keys as fedkd's) and return it."""
        final = self.rows[-1] if self.rows else {}
        summary: dict[str, Any] = {
            "method": self.method,
            "rounds_completed": int(final.get("round", 0)),
            "student_accuracy": final.get("student_accuracy", float("nan")),
            **final_val(final),
            "stopped": stopped,
            "seconds": round(time.monotonic() - self.t_start, 2),
        }
        summary.update({k: v for k, v in final.items() if k.startswith(("epsilon_", "delta_"))})
        summary.update(extra or {})
        self.run.mark_done(summary)
        return summary


def open_run(cfg: Config, out: str | Path, method: str) -> Recorder:
    """A fresh run directory for a baseline (refuses a non-empty folder, like fedkd)."""
    return Recorder(prepare(out, cfg, resume=False), method)


class CountingGrid(LocalGrid):
    """A :class:`~fedkd.simulations.localgrid.LocalGrid` that counts bytes as fedkd does.

    Downlink: the sum of ``count_bytes()`` of the records of every message pushed; uplink:
    the same for every non-error reply, per source node. :meth:`take` returns and resets
    the counters (one call per round).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bytes_down = 0
        self.bytes_up: dict[int, int] = {}

    def push_messages(self, messages: Iterable[Message]) -> list[str]:  # noqa: D102
        messages = list(messages)
        for msg in messages:
            self.bytes_down += record_dict_bytes(msg.content.values())
        return super().push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:  # noqa: D102
        replies = super().pull_messages(message_ids)
        for reply in replies:
            if not reply.has_error():
                src = int(reply.metadata.src_node_id)
                self.bytes_up[src] = self.bytes_up.get(src, 0) + record_dict_bytes(
                    reply.content.values()
                )
        return replies

    def take(self) -> dict[str, Any]:
        """Bytes moved since the last call, as fields of a metrics row."""
        row = {
            "bytes_up": int(sum(self.bytes_up.values())),
            "bytes_down": int(self.bytes_down),
            "bytes_up_per_client": {str(k): v for k, v in sorted(self.bytes_up.items())},
            "clients": len(self.bytes_up),
        }
        self.bytes_down, self.bytes_up = 0, {}
        return row


def finite_or_nan(value: float) -> float:
    """``value`` if finite, else nan (JSON-friendly summaries)."""
    return float(value) if math.isfinite(value) else float("nan")
