"""``gaussian``: clip each client's prediction matrix, sum, add Gaussian noise (trusted server).

The math and the ledger entry are :mod:`fedkd.privacy.gaussian`'s; every draw comes from a
fresh OS-seeded generator (:mod:`fedkd.privacy.entropy`).
"""

from __future__ import annotations

import numpy as np

from fedkd.mechanisms.base import TeacherRelease
from fedkd.mechanisms.client_level import ClientLevel
from fedkd.privacy.ledger import Release

_NOISE = 0x6A  # purpose tag of the teacher's noise (insecure_seeded_noise only)


class CentralGaussian(ClientLevel):
    """The central Gaussian mechanism on clipped prediction matrices (client level)."""

    name = "gaussian"

    def releases_every_round(self) -> bool:
        """Always: skipping an empty round would tell who took part."""
        return True

    def candidate(self, server_round: int, num_clients: int) -> Release:
        """One round's release (it does not depend on the replies)."""
        from fedkd.privacy.gaussian import release_for_round

        g = self.cfg.privacy.gaussian
        return release_for_round(
            server_round, g.noise_multiplier, self.ctx.sample_rate, num_clients, self.ctx.seeded
        )

    def release(
        self, server_round: int, preds: np.ndarray, weights: np.ndarray, num_clients: int
    ) -> TeacherRelease:
        """Noisy mean of the clipped predictions, projected back to probabilities."""
        from fedkd.privacy.gaussian import gaussian_aggregate

        g = self.cfg.privacy.gaussian
        rng = self.ctx.rng(server_round, _NOISE)
        teacher = gaussian_aggregate(preds, g.clip_norm, g.noise_multiplier, rng)
        return TeacherRelease(
            rows=np.arange(preds.shape[1]),
            teacher=teacher.astype(np.float32),
            entries=(self.candidate(server_round, num_clients),),
        )
