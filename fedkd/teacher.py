"""Server-side teacher: decode and validate replies, aggregate, cache labels per proxy row."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fedkd import protocol as proto
from fedkd.compress import Codec, CodecError


class ReplyError(ValueError):
    """A client reply that is dropped (the message gives the reason)."""


_DPSGD_KEYS = proto.DPSGD_METRICS


def _number(metrics: Mapping[str, object], key: str) -> float:
    value = metrics.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
        raise ReplyError(f"metric {key} must be a finite number, got {value!r}")
    return float(value)


def check_metrics(metrics: Mapping[str, object]) -> int:
    """Validate a reply's metrics; return the client id.

    ``client-id`` a non-negative integer, ``num-examples`` > 0, and the DP-SGD metrics
    either all absent or all valid (ε ≥ 0, steps ≥ 0, σ > 0, q in (0, 1], N ≥ 1).
    """
    cid = _number(metrics, proto.CLIENT_ID)
    if cid < 0 or cid != int(cid):
        raise ReplyError(f"metric client-id must be a non-negative integer, got {cid!r}")
    if _number(metrics, proto.NUM_EXAMPLES) <= 0:
        raise ReplyError("metric num-examples must be > 0")
    present = [k for k in _DPSGD_KEYS if k in metrics]
    if present:
        if len(present) != len(_DPSGD_KEYS):
            missing = sorted(set(_DPSGD_KEYS) - set(present))
            raise ReplyError(f"DP-SGD metrics incomplete: missing {', '.join(missing)}")
        eps = _number(metrics, proto.DPSGD_EPSILON)
        steps = _number(metrics, proto.DPSGD_STEPS_ROUND)
        noise = _number(metrics, proto.DPSGD_NOISE)
        rate = _number(metrics, proto.DPSGD_SAMPLE_RATE)
        if eps < 0 or steps < 0 or steps != int(steps):
            raise ReplyError(f"DP-SGD metrics out of range (epsilon {eps}, steps {steps})")
        if noise <= 0 or not 0 < rate <= 1 or _number(metrics, proto.DPSGD_POPULATION) < 1:
            raise ReplyError("DP-SGD metrics out of range (noise, sample rate or population)")
    return int(cid)


def decode_reply(
    arrays: Mapping[str, np.ndarray],
    metrics: Mapping[str, object],
    codec: Codec,
    num_rows: int,
    num_classes: int,
) -> tuple[int, np.ndarray]:
    """Validate one reply and decode its predictions.

    Returns the client id and (num_rows, num_classes) probabilities. Raises
    :class:`ReplyError` for anything malformed: metrics (:func:`check_metrics`) or codec
    payload (keys, dtype, shape, range, finiteness).
    """
    cid = check_metrics(metrics)
    try:
        probs = codec.decode(arrays, num_rows, num_classes)
    except CodecError as err:
        raise ReplyError(f"predictions: {err}") from err
    return cid, probs


@dataclass
class TeacherCache:
    """The student's target for every proxy row (rows never labelled stay masked out).

    With ``decay`` 0 a row's target is the latest teacher released for it. With ``decay``
    β in (0, 1) it is an exponential moving average of the teachers released for it,
    ``β · previous + (1 − β) · latest`` (temporal ensembling, Laine and Aila, ICLR 2017);
    a row's first teacher is taken as it is. Either way the targets are post-processing of
    released teachers. The arrays are the whole state: a checkpoint of them resumes the
    average exactly.
    """

    probs: np.ndarray  # (P, C) float32
    labelled: np.ndarray  # (P,) bool
    decay: float = 0.0

    @classmethod
    def empty(cls, num_proxy: int, num_classes: int, decay: float = 0.0) -> TeacherCache:
        """No row labelled yet."""
        return cls(np.zeros((num_proxy, num_classes), np.float32), np.zeros(num_proxy, bool), decay)

    def update(self, idx: np.ndarray, probs: np.ndarray) -> None:
        """Fold this round's teacher labels for rows ``idx`` into their targets."""
        probs = np.asarray(probs, np.float32)
        if self.decay > 0:
            seen = self.labelled[idx]
            probs = np.where(
                seen[:, None], self.decay * self.probs[idx] + (1 - self.decay) * probs, probs
            )
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
