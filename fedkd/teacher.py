"""Server-side teacher: decode and validate replies, aggregate, cache labels per proxy row."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fedkd.compress import Codec, CodecError


class ReplyError(ValueError):
    """A client reply that is dropped (the message gives the reason)."""


def decode_reply(
    arrays: Mapping[str, np.ndarray],
    metrics: Mapping[str, object],
    codec: Codec,
    num_rows: int,
    num_classes: int,
) -> np.ndarray:
    """Decode one reply's predictions into (num_rows, num_classes) probabilities.

    Raises :class:`ReplyError` for anything malformed: codec payload (keys, dtype, shape,
    range, finiteness) and metrics (positive finite ``num-examples``, non-negative ε).
    """
    examples = metrics.get("num-examples")
    if not isinstance(examples, int | float) or not np.isfinite(examples) or examples <= 0:
        raise ReplyError(f"num-examples must be a positive number, got {examples!r}")
    for key in ("epsilon", "dpsgd-epsilon"):
        value = metrics.get(key)
        if value is not None and (not isinstance(value, int | float) or not value >= 0):
            raise ReplyError(f"{key} must be a non-negative number, got {value!r}")
    try:
        probs = codec.decode(arrays, num_rows, num_classes)
    except CodecError as err:
        raise ReplyError(f"predictions: {err}") from err
    return probs


@dataclass
class TeacherCache:
    """Latest teacher label of every proxy row (rows never labelled stay masked out)."""

    probs: np.ndarray  # (P, C) float32
    labelled: np.ndarray  # (P,) bool

    @classmethod
    def empty(cls, num_proxy: int, num_classes: int) -> TeacherCache:
        """No row labelled yet."""
        return cls(np.zeros((num_proxy, num_classes), np.float32), np.zeros(num_proxy, bool))

    def update(self, idx: np.ndarray, probs: np.ndarray) -> None:
        """Overwrite rows ``idx`` with this round's teacher labels."""
        self.probs[idx] = probs
        self.labelled[idx] = True

    def rows(self) -> np.ndarray:
        """Indices of labelled rows."""
        return np.flatnonzero(self.labelled)


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of probability rows against integer labels (nan when empty)."""
    if len(labels) == 0:
        return float("nan")
    return float(np.mean(probs.argmax(1) == labels))
