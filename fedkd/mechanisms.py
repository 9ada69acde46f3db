"""Server-side teacher construction with the client-level privacy mechanism and its ledger.

``none``: an aggregation rule from :mod:`fedkd.aggregate`. ``gaussian``: clip each
client's prediction matrix, sum, add Gaussian noise (trusted server). ``pate``: vote
histograms answered by (Confident-)GNMax; unanswered rows are not distilled on.
Example-level DP-SGD runs on the clients; the server copies each client's reported DP-SGD
steps into the same ledger, so every ε in the run's output is recomputed from one ledger.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from fedkd.aggregate import aggregate
from fedkd.config import Config
from fedkd.privacy.ledger import PrivacyLedger, Release

logger = logging.getLogger(__name__)

LEDGER_FILE = "ledger.json"


class RunStopped(Exception):  # noqa: N818 - a stop signal, not an error
    """The run stops cleanly before its last round; the message says why."""


class BudgetReached(RunStopped):
    """The next round would exceed ``privacy.max_epsilon``."""


class CentralMechanism:
    """Turns stacked client predictions into teacher labels and keeps the privacy ledger."""

    def __init__(self, cfg: Config, num_examples: int, num_proxy: int) -> None:
        self.cfg = cfg
        self.num_examples = num_examples
        self.num_proxy = num_proxy  # PATE's worst-case budget check needs the query count
        self.mechs = set(cfg.privacy.mechanisms)
        self.ledger = PrivacyLedger()
        self.client_eps: dict[int, float] = {}  # last DP-SGD ε each client reported
        self._rng: np.random.Generator | None = None

    @property
    def releases_every_round(self) -> bool:
        """Whether the mechanism must release even when no valid reply arrived."""
        return "gaussian" in self.mechs

    @property
    def rng(self) -> np.random.Generator:
        """Noise source of the central mechanisms: seeded from ``os.urandom``, never saved."""
        if self._rng is None:
            from fedkd.privacy.gaussian import secure_rng

            self._rng = secure_rng()
        return self._rng

    def _sample_rate(self) -> float:
        c = self.cfg.clients
        return c.sample_rate if c.sampling == "poisson" else 1.0

    @property
    def client_delta(self) -> float:
        """δ of the client-level guarantee."""
        p = self.cfg.privacy
        return p.client_delta if p.client_delta is not None else p.delta

    # -- teacher ------------------------------------------------------------------------------
    def teacher(
        self, server_round: int, preds: np.ndarray, weights: np.ndarray, num_clients: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Teacher labels for the round and the ledger entries they cost.

        Returns the answered rows (positions into the round's proxy subset) and their
        (rows, C) teacher probabilities.
        """
        p = self.cfg.privacy
        rows = np.arange(preds.shape[1])
        if "gaussian" in self.mechs:
            from fedkd.privacy import gaussian

            g = p.gaussian
            teacher = gaussian.gaussian_aggregate(preds, g.clip_norm, g.noise_multiplier, self.rng)
            self.ledger.append(
                gaussian.release_for_round(
                    server_round, g.noise_multiplier, self._sample_rate(), num_clients
                )
            )
            return rows, teacher.astype(np.float32)
        if "pate" in self.mechs:
            return self._pate(server_round, preds, num_clients)
        d = self.cfg.distill
        return rows, aggregate(d.aggregation, preds, weights, **d.aggregation_params)

    def _pate(
        self, server_round: int, preds: np.ndarray, num_clients: int
    ) -> tuple[np.ndarray, np.ndarray]:
        from fedkd.privacy import gnmax

        pt = self.cfg.privacy.pate
        votes = aggregate("votes", preds)  # (M, C) counts
        if pt.threshold is None:
            labels = gnmax.gnmax(votes, pt.sigma, self.rng)
            answered = np.ones(len(labels), bool)
            release = gnmax.release_for_round(
                server_round, pt.sigma, len(labels), num_clients, sample_rate=self._sample_rate()
            )
        else:
            labels, answered = gnmax.confident_gnmax(
                votes, pt.threshold, pt.sigma_threshold, pt.sigma, self.rng
            )
            release = gnmax.release_for_round(
                server_round,
                pt.sigma,
                int(answered.sum()),
                num_clients,
                sigma1=pt.sigma_threshold,
                checked=len(labels),
                sample_rate=self._sample_rate(),
            )
        self.ledger.append(release)
        rows = np.flatnonzero(answered)
        teacher = np.eye(votes.shape[1], dtype=np.float32)[labels[rows]]
        return rows, teacher

    # -- budget ---------------------------------------------------------------------------------
    def _round_candidate(self, server_round: int, num_clients: int) -> Release | None:
        p = self.cfg.privacy
        if "gaussian" in self.mechs:
            from fedkd.privacy.gaussian import release_for_round

            return release_for_round(
                server_round, p.gaussian.noise_multiplier, self._sample_rate(), num_clients
            )
        if "pate" in self.mechs:
            from fedkd.privacy.gnmax import release_for_round

            m = self.cfg.distill.proxy_per_round or self.num_proxy
            thr = p.pate.threshold is not None
            return release_for_round(  # worst case: every query answered
                server_round,
                p.pate.sigma,
                m,
                num_clients,
                sigma1=p.pate.sigma_threshold if thr else None,
                checked=m if thr else 0,
                sample_rate=self._sample_rate(),
            )
        return None

    def check_budget(self, server_round: int, num_clients: int) -> None:
        """Raise :class:`BudgetReached` when the round would exceed ``privacy.max_epsilon``."""
        from fedkd.privacy.accounting import epsilon, would_exceed

        budget = self.cfg.privacy.max_epsilon
        candidate = self._round_candidate(server_round, num_clients)
        if budget is None or candidate is None:
            return
        history = [r for r in self.ledger.releases if r.scope == "client"]
        if would_exceed(history, [candidate], self.client_delta, budget, "rdp"):
            spent = epsilon(history, self.client_delta, "rdp") if history else 0.0
            raise BudgetReached(
                f"privacy budget reached at round {server_round} "
                f"(ε = {spent:.3f} of {budget:g}, client level, δ = {self.client_delta:g})"
            )

    def check_client_epsilon(self, client_id: int, metrics: dict[str, Any]) -> None:
        """Refuse a reply whose DP-SGD ε is below what the client reported before."""
        from fedkd.teacher import ReplyError

        if "dpsgd-epsilon" not in metrics:
            return
        eps = float(metrics["dpsgd-epsilon"])
        last = self.client_eps.get(client_id, 0.0)
        if eps < last - 1e-9:
            raise ReplyError(f"dpsgd-epsilon went down from {last:.6g} to {eps:.6g}")
        self.client_eps[client_id] = eps

    def record_client_releases(self, server_round: int, metrics: list[dict[str, Any]]) -> None:
        """Copy the DP-SGD steps each client reports into the ledger."""
        for m in metrics:
            steps = int(m.get("dpsgd-steps", 0) or 0)
            if steps <= 0:
                continue
            self.ledger.append(
                Release(
                    mechanism="dpsgd",
                    scope="example",
                    subject=f"client-{int(m['client-id'])}",
                    round=server_round,
                    noise_multiplier=float(m["dpsgd-noise"]),
                    sample_rate=float(m["dpsgd-sample-rate"]),
                    steps=steps,
                    population=int(m["dpsgd-population"]),
                )
            )

    # -- reporting ------------------------------------------------------------------------------
    def epsilons(self) -> dict[str, float]:
        """Cumulative ε per scope, recomputed from the ledger.

        Example level: the maximum over clients, with the DP-SGD accountant (``prv`` or
        ``rdp``). Client level: RDP over every Gaussian or PATE release.
        """
        from fedkd.privacy.accounting import epsilon

        out: dict[str, float] = {}
        p = self.cfg.privacy
        if "dpsgd" in self.mechs:
            per_client = [
                epsilon(self.ledger.for_subject(s), p.delta, p.dpsgd.accountant)
                for s in self.ledger.subjects()
                if s.startswith("client-")
            ]
            out["epsilon_example"] = max(per_client, default=0.0)
            out["delta_example"] = p.delta
        if self.mechs & {"gaussian", "pate"}:
            server = [r for r in self.ledger.releases if r.scope == "client"]
            out["epsilon_client"] = epsilon(server, self.client_delta, "rdp") if server else 0.0
            out["delta_client"] = self.client_delta
        return out

    def describe(self, row: dict[str, Any]) -> str:
        """A short suffix for the progress line."""
        parts = []
        if "epsilon_example" in row:
            parts.append(f"ε_example {row['epsilon_example']:.3f}")
        if "epsilon_client" in row:
            parts.append(f"ε_client {row['epsilon_client']:.3f}")
        return ("  " + "  ".join(parts)) if parts else ""

    def ledger_dict(self) -> dict[str, Any]:
        """The ledger as JSON-ready data."""
        return self.ledger.to_dict()

    def save_ledger(self, run_path: Path) -> None:
        """Write ``ledger.json`` into the run directory (atomically)."""
        self.ledger.save(Path(run_path) / LEDGER_FILE)

    def state_dict(self) -> dict[str, Any]:
        """Checkpoint state: the ledger (the noise generator is deliberately not saved)."""
        return {"ledger": self.ledger.to_dict(), "client_eps": dict(self.client_eps)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.ledger = PrivacyLedger.from_dict(state["ledger"])
        self.client_eps = {int(k): float(v) for k, v in state.get("client_eps", {}).items()}
