"""``pate``: clients vote one-hot, the server answers each row with (Confident-)GNMax.

Unanswered rows are not distilled on. The math and the ledger entry are
:mod:`fedkd.privacy.gnmax`'s (Papernot et al., "Scalable Private Learning with PATE",
ICLR 2018); every draw comes from a fresh OS-seeded generator.
"""

from __future__ import annotations

import numpy as np

from fedkd.mechanisms.base import TeacherRelease
from fedkd.mechanisms.client_level import ClientLevel
from fedkd.privacy.ledger import Release
from fedkd.protocol import rows_per_round

_NOISE = 0x6B  # purpose tag of the GNMax noise (insecure_seeded_noise only)


def one_hot_votes(probs: np.ndarray) -> np.ndarray:
    """(M, C) one-hot argmax of ``probs`` (ties go to the lowest class).

    Raises ``ValueError`` on NaN or Inf, as every codec does: a diverged model must fail,
    not vote for whatever class its first NaN sits in.
    """
    if not np.all(np.isfinite(probs)):
        raise ValueError("predictions to vote on must be finite (no NaN or Inf)")
    votes = np.zeros_like(probs, dtype=np.float32)
    votes[np.arange(len(probs)), np.argmax(probs, axis=1)] = 1.0
    return votes


class PATE(ClientLevel):
    """GNMax / Confident-GNMax on the clients' vote histograms (client level)."""

    name = "pate"

    @classmethod
    def codec(cls, cfg) -> str:
        """The vote is all a client sends: its class index, ceil(log2 C) bits per row."""
        return "vote"

    @classmethod
    def privatize(cls, cfg, probs: np.ndarray) -> np.ndarray:
        """The client's vote: one-hot argmax per row."""
        return one_hot_votes(probs)

    def releases_every_round(self) -> bool:
        """Under Poisson client sampling: skipping a round would tell how many replied."""
        return self.cfg.clients.sampling == "poisson"

    def _release_entry(self, server_round: int, queries: int, num_clients: int) -> Release:
        """A round's charge: GNMax on every query (answered or not), plus the checks."""
        from fedkd.privacy.gnmax import release_for_round

        pt = self.cfg.privacy.pate
        thr = pt.threshold is not None
        return release_for_round(
            server_round,
            pt.sigma,
            queries,
            num_clients,
            sigma1=pt.sigma_threshold if thr else None,
            checked=queries if thr else 0,
            sample_rate=self.ctx.sample_rate,
            seeded=self.ctx.seeded,
        )

    def candidate(self, server_round: int, num_clients: int) -> Release:
        """The round's charge for the most queries it can ask."""
        num_proxy = self.ctx.num_proxy
        m = rows_per_round(self.cfg.distill.proxy_per_round, num_proxy)
        return self._release_entry(server_round, m, num_clients)

    def release(
        self, server_round: int, preds: np.ndarray, weights: np.ndarray, num_clients: int
    ) -> TeacherRelease:
        """One-hot GNMax labels of the answered rows."""
        from fedkd.aggregate import aggregate
        from fedkd.privacy import gnmax

        pt = self.cfg.privacy.pate
        if preds.shape[0]:
            votes = aggregate("votes", preds)  # (M, C) counts
        else:  # nobody took part (Poisson): the round still releases, on an empty histogram
            votes = np.zeros(preds.shape[1:], np.float64)
        rng = self.ctx.rng(server_round, _NOISE)
        if pt.threshold is None:
            labels = gnmax.gnmax(votes, pt.sigma, rng)
            answered = np.ones(len(labels), bool)
        else:
            labels, answered = gnmax.confident_gnmax(
                votes, pt.threshold, pt.sigma_threshold, pt.sigma, rng
            )
        rows = np.flatnonzero(answered)
        teacher = np.eye(votes.shape[1], dtype=np.float32)[labels[rows]]
        entry = self._release_entry(server_round, len(labels), num_clients)
        return TeacherRelease(rows=rows, teacher=teacher, entries=(entry,))
