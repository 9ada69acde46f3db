"""One typed record per round: what was sent, what came back, what was released and measured.

The strategy opens a :class:`RoundRecord` in ``configure_train``, fills it in
``aggregate_train`` and closes it in its end-of-round step; :meth:`RoundRecord.metrics` is
the round's row of ``metrics.json``. Under Poisson client sampling, who took part is
secret (the accountant's amplification assumes it), so the row withholds every count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord

from fedkd import protocol as proto
from fedkd.mechanisms import TeacherRelease
from fedkd.privacy.ledger import Release
from fedkd.selection import unambiguous

#: Row keys that tell who, or how many, took part: withheld under Poisson sampling.
_PARTICIPATION = ("clients", "dropped", "bytes_up", "bytes_down")


@dataclass(frozen=True)
class Reply:
    """One valid reply: the client, its decoded (M, C) predictions, its weight, its metrics."""

    client_id: int
    probs: np.ndarray
    weight: float
    metrics: dict[str, Any]


@dataclass
class RoundRecord:
    """Everything one round produced, keyed by its fedkd round number.

    Attributes
    ----------
    round : int
        The fedkd round (Flower's round plus the rounds done before a resume).
    idx : np.ndarray
        The round's proxy rows (sorted int32).
    sampled : list of int
        Client ids asked to train.
    t0 : float
        ``time.monotonic()`` when the round was configured.
    secret : bool
        Poisson client sampling: participation is withheld from the metrics.
    ledger_start : int
        Ledger length before the round: ``ledger.releases[ledger_start:]`` are its entries.
    """

    round: int
    idx: np.ndarray
    sampled: list[int]
    t0: float
    secret: bool
    ledger_start: int = 0
    bytes_down: int = 0
    replies: list[Reply] = field(default_factory=list)  # dropped at the end of the round
    clients: int = 0  # valid replies
    dropped: int = 0
    bytes_up: dict[int, int] = field(default_factory=dict)  # node id -> bytes
    outcome: dict[int, str | None] = field(default_factory=dict)  # client id -> why not
    release: TeacherRelease | None = None
    teacher_accuracy: float = float("nan")
    entries: tuple[Release, ...] = ()
    epsilons: dict[str, Any] = field(default_factory=dict)
    distill_loss: float | None = None
    student_loss: float = float("nan")
    student_accuracy: float = float("nan")
    val: dict[str, float] = field(default_factory=dict)  # validation metrics, if a split exists
    seconds: float | None = None

    def stacked(self, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
        """The valid replies' predictions (K, M, C) and weights (K,), by client id."""
        preds = np.zeros((0, len(self.idx), num_classes), np.float32)
        if self.replies:
            preds = np.stack([r.probs for r in self.replies])
        return preds, np.array([r.weight for r in self.replies])

    def teacher_record(self, max_entropy: float = 1.0) -> ArrayRecord | None:
        """The released teacher as sent to the clients next round (None: nothing released).

        ``max_entropy`` < 1 leaves out the ambiguous rows (Selective-FD's server-side
        selector, :func:`fedkd.selection.unambiguous`).
        """
        if self.release is None:
            return None
        keep = unambiguous(self.release.teacher, max_entropy)
        return label_record(self.idx[self.release.rows][keep], self.release.teacher[keep])

    def metrics(self) -> dict[str, Any]:
        """The round's row of ``metrics.json`` / ``metrics.csv``."""
        row: dict[str, Any] = {
            "round": self.round,
            "clients": self.clients,
            "dropped": self.dropped,
            "bytes_up": int(sum(self.bytes_up.values())),
            "bytes_down": int(self.bytes_down),
        }
        if self.secret:
            row.update(dict.fromkeys(_PARTICIPATION))
        else:
            row["bytes_up_per_client"] = {str(k): v for k, v in sorted(self.bytes_up.items())}
        row["teacher_accuracy"] = self.teacher_accuracy
        if self.release is not None:
            row["answered"] = int(len(self.release.rows))
            row["distill_loss"] = self.distill_loss
        row.update(self.epsilons)
        row["student_loss"] = self.student_loss
        row["student_accuracy"] = self.student_accuracy
        row.update(self.val)
        # A round's duration grows with who trained: withheld under Poisson sampling.
        row["seconds"] = None if self.secret else self.seconds
        return row


def label_record(rows: np.ndarray, probs: np.ndarray) -> ArrayRecord:
    """Soft labels ``probs`` (R, C) of proxy ``rows`` (R,) as the clients digest them."""
    return ArrayRecord(
        {
            proto.IDX: Array(np.asarray(rows).astype(np.int32)),
            proto.PROBS: Array(np.asarray(probs).astype(np.float16)),
        }
    )
