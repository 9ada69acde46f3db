"""No privacy: the teacher is an aggregation rule of :mod:`fedkd.aggregate` (no ledger entry)."""

from __future__ import annotations

import numpy as np

from fedkd.aggregate import aggregate
from fedkd.mechanisms.base import Mechanism, TeacherRelease


class NoPrivacy(Mechanism):
    """``distill.aggregation`` over the replies, every row answered, nothing charged."""

    name = "none"
    releases_teacher = True

    def release(
        self, server_round: int, preds: np.ndarray, weights: np.ndarray, num_clients: int
    ) -> TeacherRelease:
        """The configured aggregation of the (K, M, C) predictions."""
        d = self.cfg.distill
        teacher = aggregate(d.aggregation, preds, weights, **d.aggregation_params)
        return TeacherRelease(rows=np.arange(preds.shape[1]), teacher=teacher)
