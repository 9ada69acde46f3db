"""Server-side teacher construction with the client-level privacy mechanism and its ledger.

``none``: an aggregation rule from :mod:`fedkd.aggregate`. ``gaussian``: clip each
client's prediction matrix, sum, add Gaussian noise (trusted server). ``pate``: vote
histograms answered by (Confident-)GNMax; unanswered rows are not distilled on.
Example-level DP-SGD runs on the clients. The server charges each sampled client's planned
DP-SGD steps to the same ledger when it sends the train message, before anything can be
released, and reconciles with the client's cumulative count when a reply arrives: a lost,
late or invalid reply never lowers the charge, so the ledger can only over-count. Every ε
in the run's output is recomputed from that one ledger by the enforced accountant (PLD).

Every noise draw uses a fresh OS-seeded generator (:mod:`fedkd.privacy.entropy`).
"""

from __future__ import annotations

import logging
from dataclasses import replace
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
        self.sizes: dict[int, int] = {}  # client id -> private examples (handshake)
        self._dpsgd_plans: dict[int, Any] = {}  # N -> DPSGDState (σ calibrated once per N)

    @property
    def releases_every_round(self) -> bool:
        """Whether the mechanism must release even when no valid reply arrived."""
        poisson = self.cfg.clients.sampling == "poisson"
        return "gaussian" in self.mechs or ("pate" in self.mechs and poisson)

    @property
    def seeded(self) -> bool:
        """Whether the run derives its noise from ``seed`` (ε is then not a guarantee)."""
        return bool(self.cfg.privacy.insecure_seeded_noise)

    def rng(self, server_round: int, purpose: int) -> np.random.Generator:
        """A fresh generator for one release (OS entropy; seeded only in insecure mode)."""
        from fedkd.privacy.entropy import numpy_rng

        parts = (self.cfg.seed, server_round, purpose) if self.seeded else None
        return numpy_rng(parts)

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
            rng = self.rng(server_round, 0x6A)
            teacher = gaussian.gaussian_aggregate(preds, g.clip_norm, g.noise_multiplier, rng)
            self.ledger.append(
                gaussian.release_for_round(
                    server_round, g.noise_multiplier, self._sample_rate(), num_clients, self.seeded
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
        if preds.shape[0]:
            votes = aggregate("votes", preds)  # (M, C) counts
        else:  # nobody took part (Poisson): the round still releases, on an empty histogram
            votes = np.zeros(preds.shape[1:], np.float64)
        rng = self.rng(server_round, 0x6B)
        if pt.threshold is None:
            labels = gnmax.gnmax(votes, pt.sigma, rng)
            answered = np.ones(len(labels), bool)
        else:
            labels, answered = gnmax.confident_gnmax(
                votes, pt.threshold, pt.sigma_threshold, pt.sigma, rng
            )
        release = self._pate_release(server_round, len(labels), num_clients)
        self.ledger.append(release)
        rows = np.flatnonzero(answered)
        teacher = np.eye(votes.shape[1], dtype=np.float32)[labels[rows]]
        return rows, teacher

    def _pate_release(self, server_round: int, queries: int, num_clients: int) -> Release:
        """A PATE round's charge: GNMax on every query (answered or not), plus the checks."""
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
            sample_rate=self._sample_rate(),
            seeded=self.seeded,
        )

    # -- budget ---------------------------------------------------------------------------------
    def _round_candidate(self, server_round: int, num_clients: int) -> Release | None:
        p = self.cfg.privacy
        if "gaussian" in self.mechs:
            from fedkd.privacy.gaussian import release_for_round

            return release_for_round(
                server_round,
                p.gaussian.noise_multiplier,
                self._sample_rate(),
                num_clients,
                self.seeded,
            )
        if "pate" in self.mechs:
            m = self.cfg.distill.proxy_per_round or self.num_proxy
            return self._pate_release(server_round, min(m, self.num_proxy), num_clients)
        return None

    def check_budget(self, server_round: int, num_clients: int) -> None:
        """Raise :class:`BudgetReached` when the round would exceed ``privacy.max_epsilon``."""
        from fedkd.privacy.accounting import epsilon, would_exceed

        budget = self.cfg.privacy.max_epsilon
        candidate = self._round_candidate(server_round, num_clients)
        if budget is None or candidate is None:
            return
        history = [r for r in self.ledger.releases if r.scope == "client"]
        if would_exceed(history, [candidate], self.client_delta, budget):
            spent = epsilon(history, self.client_delta) if history else 0.0
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

    # -- DP-SGD charges ------------------------------------------------------------------------
    def _plan(self, client_id: int) -> Any:
        from fedkd.privacy.client import initial_state

        n = self.sizes[client_id]
        if n not in self._dpsgd_plans:
            self._dpsgd_plans[n] = initial_state(self.cfg, n)
        return self._dpsgd_plans[n]

    def _dpsgd_release(self, client_id: int, server_round: int, steps: int, plan: Any) -> Release:
        from fedkd.privacy.client import dpsgd_release

        n = self.sizes.get(client_id, 1)
        return dpsgd_release(f"client-{client_id}", server_round, steps, plan, n, self.cfg)

    def charge_dpsgd(self, server_round: int, chosen: list[int]) -> dict[int, int]:
        """Charge each sampled client's planned DP-SGD steps before the message goes out.

        Returns the steps charged per sampled client, which the train message carries. A
        client whose charge would take it over ``privacy.max_epsilon`` is charged 0 and told
        so: it must not train (it answers from its frozen model). Under Poisson client
        sampling every client is charged, sampled or not (an over-count), so that the
        published ledger does not say who took part.
        """
        if "dpsgd" not in self.mechs:
            return {}
        from fedkd.privacy.accounting import would_exceed
        from fedkd.privacy.client import steps_per_round

        budget = self.cfg.privacy.max_epsilon
        secret = self.cfg.clients.sampling == "poisson"
        charged = {}
        for cid in sorted(self.sizes) if secret else chosen:
            steps = steps_per_round(self.cfg, self.sizes[cid])
            release = self._dpsgd_release(cid, server_round, steps, self._plan(cid))
            history = self.ledger.for_subject(release.subject)
            if budget is not None and would_exceed(
                history, [release], self.cfg.privacy.delta, budget
            ):
                steps = 0
            elif steps > 0:
                self.ledger.append(release)
            charged[cid] = steps
        return {cid: charged[cid] for cid in chosen}

    def reconcile_dpsgd(self, server_round: int, client_id: int, metrics: dict[str, Any]) -> None:
        """Charge whatever a reply shows beyond the ledger's charges (never lowers them).

        Raises :class:`~fedkd.teacher.ReplyError` when the client's σ or q differ from the
        plan; its reported steps are charged first, with its own σ and q.
        """
        from fedkd.teacher import ReplyError

        if "dpsgd-steps-total" not in metrics:
            return
        plan = self._plan(client_id)
        subject = f"client-{client_id}"
        total = int(metrics["dpsgd-steps-total"])
        charged = sum(r.steps for r in self.ledger.for_subject(subject))
        noise, rate = float(metrics["dpsgd-noise"]), float(metrics["dpsgd-sample-rate"])
        same = np.isclose(noise, plan.noise_multiplier, rtol=1e-9) and np.isclose(
            rate, plan.sample_rate, rtol=1e-12
        )
        if not same:
            reported = replace(plan, noise_multiplier=noise, sample_rate=rate)
            self.ledger.append(self._dpsgd_release(client_id, server_round, total, reported))
            raise ReplyError(
                f"DP-SGD noise {noise:.6g} / sample rate {rate:.6g} differ from the plan "
                f"({plan.noise_multiplier:.6g} / {plan.sample_rate:.6g}); charged its steps"
            )
        if total > charged:
            secret = self.cfg.clients.sampling == "poisson"
            logger.warning(
                "client %s reports %d DP-SGD steps, %d were charged: charging the rest",
                "(withheld)" if secret else client_id,
                total,
                charged,
            )
            self.ledger.append(self._dpsgd_release(client_id, server_round, total - charged, plan))

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
                epsilon(self.ledger.for_subject(s), p.delta)
                for s in self.ledger.subjects()
                if s.startswith("client-")
            ]
            out["epsilon_example"] = max(per_client, default=0.0)
            out["delta_example"] = p.delta
        if self.mechs & {"gaussian", "pate"}:
            server = [r for r in self.ledger.releases if r.scope == "client"]
            out["epsilon_client"] = epsilon(server, self.client_delta) if server else 0.0
            out["delta_client"] = self.client_delta
        if out:
            out["accountant"] = "pld"
            out["epsilon_guarantee"] = not self.seeded
        return out

    def describe(self, row: dict[str, Any]) -> str:
        """A short suffix for the progress line."""
        parts = []
        if "epsilon_example" in row:
            parts.append(f"ε_example {row['epsilon_example']:.3f}")
        if "epsilon_client" in row:
            parts.append(f"ε_client {row['epsilon_client']:.3f}")
        if parts:
            parts.append("(PLD, replace-one)")
        if parts and self.seeded:
            from fedkd.privacy.entropy import INSECURE_NOTE

            parts.append(INSECURE_NOTE)
        return ("  " + "  ".join(parts)) if parts else ""

    def ledger_dict(self) -> dict[str, Any]:
        """The ledger as JSON-ready data."""
        return self.ledger.to_dict()

    def save_ledger(self, run_path: Path) -> None:
        """Write ``ledger.json`` into the run directory (atomically)."""
        self.ledger.save(Path(run_path) / LEDGER_FILE)

    def state_dict(self) -> dict[str, Any]:
        """Checkpoint state: the ledger (the noise generator is deliberately not saved)."""
        return {
            "ledger": self.ledger.to_dict(),
            "client_eps": dict(self.client_eps),
            "sizes": dict(self.sizes),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.ledger = PrivacyLedger.from_dict(state["ledger"])
        self.client_eps = {int(k): float(v) for k, v in state.get("client_eps", {}).items()}
        self.sizes = {int(k): int(v) for k, v in state.get("sizes", {}).items()}
