"""``dpsgd``: example-level DP-SGD on the clients; the server keeps the books.

The server charges each sampled client's planned DP-SGD steps to the ledger when it sends
the train message, before anything can be released, and reconciles with the client's
cumulative count when a reply arrives: a lost, late or invalid reply never lowers the
charge, so the ledger can only over-count (docs/privacy.md). The client side (Opacus) is
:mod:`fedkd.privacy.client`.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import numpy as np

from fedkd import protocol as proto
from fedkd.mechanisms.base import Mechanism
from fedkd.privacy.ledger import Release

logger = logging.getLogger(__name__)


def subject_of(client_id: int) -> str:
    """The ledger subject of one client's DP-SGD steps."""
    return f"client-{client_id}"


class DPSGD(Mechanism):
    """DP-SGD bookkeeping: charges at send, reconciliation and ε checks on replies."""

    name = "dpsgd"
    scope = "example"
    keeps_device_accountant = True

    # -- client side ----------------------------------------------------------------------
    @classmethod
    def device_request(cls, cfg, num_examples: int) -> dict[str, Any]:
        """Refuse δ >= 1/N for the device's N; the σ and planned ε for its floor."""
        from fedkd.privacy.client import planned_epsilon
        from fedkd.privacy.policy import check_device_delta

        check_device_delta(cfg.privacy.delta, num_examples)
        return {"dpsgd": planned_epsilon(cfg, num_examples)}

    @classmethod
    def revisit(cls, cfg, step: Any) -> tuple[float, Any, dict[str, float]]:
        """Opacus DP-SGD within the server's charge and the smaller of the two budgets."""
        from fedkd.privacy.client import RevisitLimits, private_revisit  # Opacus when asked

        budgets = [b for b in (cfg.privacy.max_epsilon, step.device_budget) if b is not None]
        limits = RevisitLimits(step.task.dpsgd_steps, min(budgets) if budgets else None)
        return private_revisit(
            cfg, step.net, step.data, step.client_id, step.task.server_round, step.state, limits
        )

    # -- server side ----------------------------------------------------------------------

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.client_eps: dict[int, float] = {}  # last DP-SGD ε each client reported
        self._plans: dict[int, Any] = {}  # N -> DPSGDState (σ calibrated once per N)

    def _plan(self, client_id: int) -> Any:
        from fedkd.privacy.client import initial_state

        n = self.ctx.sizes[client_id]
        if n not in self._plans:
            self._plans[n] = initial_state(self.cfg, n)
        return self._plans[n]

    def _entry(self, client_id: int, server_round: int, steps: int, plan: Any) -> Release:
        from fedkd.privacy.client import dpsgd_release

        n = self.ctx.sizes.get(client_id, 1)
        return dpsgd_release(subject_of(client_id), server_round, steps, plan, n, self.cfg)

    def on_send(self, server_round: int, chosen: list[int]) -> dict[int, dict[str, Any]]:
        """Charge each sampled client's planned steps; the message carries the count.

        A client whose charge would take it over ``privacy.max_epsilon`` is charged 0 and
        told so: it must not train (it answers from its frozen model). Under Poisson client
        sampling every client is charged, sampled or not (an over-count), so that the
        published ledger does not say who took part.
        """
        from fedkd.privacy.accounting import would_exceed
        from fedkd.privacy.client import steps_per_round

        budget = self.cfg.privacy.max_epsilon
        secret = self.cfg.clients.sampling == "poisson"
        ledger = self.ctx.ledger
        charged = {}
        for cid in sorted(self.ctx.sizes) if secret else chosen:
            steps = steps_per_round(self.cfg, self.ctx.sizes[cid])
            entry = self._entry(cid, server_round, steps, self._plan(cid))
            history = ledger.for_subject(entry.subject)
            if budget is not None and would_exceed(
                history, [entry], self.cfg.privacy.delta, budget
            ):
                steps = 0
            elif steps > 0:
                ledger.append(entry)
            charged[cid] = steps
        return {cid: {proto.DPSGD_STEPS: charged[cid]} for cid in chosen}

    def on_reply(self, server_round: int, client_id: int, metrics: dict[str, Any]) -> None:
        """Charge what the reply shows beyond the charges, then refuse a falling ε."""
        self._reconcile(server_round, client_id, metrics)
        self._check_epsilon(client_id, metrics)

    def _reconcile(self, server_round: int, client_id: int, metrics: dict[str, Any]) -> None:
        """Charge whatever a reply shows beyond the ledger's charges (never lowers them).

        Raises :class:`~fedkd.teacher.ReplyError` when the client's σ or q differ from the
        plan; its reported steps are charged first, with its own σ and q.
        """
        from fedkd.teacher import ReplyError

        if proto.DPSGD_STEPS_TOTAL not in metrics:
            return
        ledger, plan = self.ctx.ledger, self._plan(client_id)
        total = int(metrics[proto.DPSGD_STEPS_TOTAL])
        charged = sum(r.steps for r in ledger.for_subject(subject_of(client_id)))
        noise = float(metrics[proto.DPSGD_NOISE])
        rate = float(metrics[proto.DPSGD_SAMPLE_RATE])
        same = np.isclose(noise, plan.noise_multiplier, rtol=1e-9) and np.isclose(
            rate, plan.sample_rate, rtol=1e-12
        )
        if not same:
            reported = replace(plan, noise_multiplier=noise, sample_rate=rate)
            ledger.append(self._entry(client_id, server_round, total, reported))
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
            ledger.append(self._entry(client_id, server_round, total - charged, plan))

    def _check_epsilon(self, client_id: int, metrics: dict[str, Any]) -> None:
        """Refuse a reply whose DP-SGD ε is below what the client reported before."""
        from fedkd.teacher import ReplyError

        if proto.DPSGD_EPSILON not in metrics:
            return
        eps = float(metrics[proto.DPSGD_EPSILON])
        last = self.client_eps.get(client_id, 0.0)
        if eps < last - 1e-9:
            raise ReplyError(f"{proto.DPSGD_EPSILON} went down from {last:.6g} to {eps:.6g}")
        self.client_eps[client_id] = eps

    def report(self) -> dict[str, float]:
        """``epsilon_example``: the largest per-client PLD ε; ``delta_example``."""
        from fedkd.privacy.accounting import epsilon

        ledger, delta = self.ctx.ledger, self.cfg.privacy.delta
        per_client = [
            epsilon(ledger.for_subject(s), delta)
            for s in ledger.subjects()
            if s.startswith("client-")
        ]
        return {"epsilon_example": max(per_client, default=0.0), "delta_example": delta}

    def state_dict(self) -> dict[str, Any]:
        """The last ε each client reported (the plans are recomputed)."""
        return {"client_eps": dict(self.client_eps)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.client_eps = {int(k): float(v) for k, v in state.get("client_eps", {}).items()}
