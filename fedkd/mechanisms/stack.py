"""A run's mechanisms behind one object: the hooks of each, in order, and one ledger.

:class:`CentralMechanism` builds the mechanisms of ``privacy.mechanisms`` from the registry
(plus the non-private aggregation when none of them releases the teacher) and calls their
hooks; it never looks at a mechanism's name. Every ε it reports is recomputed from the one
ledger by the enforced accountant (PLD, replace-one).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedkd.config import Config
from fedkd.mechanisms.base import BudgetReached, Mechanism, TeacherRelease
from fedkd.mechanisms.registry import mechanism_classes
from fedkd.privacy.ledger import PrivacyLedger


class CentralMechanism:
    """The server side of a run's mechanisms (implements :class:`MechanismContext`).

    Parameters
    ----------
    cfg : Config
        The run configuration.
    num_examples : int
        Private examples over all clients (kept for callers; not used by the hooks).
    num_proxy : int
        Rows of the public proxy set (PATE's worst-case budget check counts queries).
    """

    def __init__(self, cfg: Config, num_examples: int, num_proxy: int) -> None:
        self.cfg = cfg
        self.num_examples = num_examples
        self.num_proxy = num_proxy
        self.sizes: dict[int, int] = {}  # client id -> private examples (handshake)
        self._ledger = PrivacyLedger()
        self.mechanisms: list[Mechanism] = [
            cls(self) for cls in mechanism_classes(cfg.privacy.mechanisms)
        ]
        self._teacher = next(m for m in self.mechanisms if m.releases_teacher)

    # -- context ----------------------------------------------------------------------------
    @property
    def ledger(self) -> PrivacyLedger:
        """The run's one privacy ledger."""
        return self._ledger

    @property
    def seeded(self) -> bool:
        """Whether the run derives its noise from ``seed`` (ε is then not a guarantee)."""
        return bool(self.cfg.privacy.insecure_seeded_noise)

    @property
    def sample_rate(self) -> float:
        """Poisson client-sampling rate the accountant is told about (1 without it)."""
        c = self.cfg.clients
        return c.sample_rate if c.sampling == "poisson" else 1.0

    @property
    def client_delta(self) -> float:
        """δ of the client-level guarantee."""
        p = self.cfg.privacy
        return p.client_delta if p.client_delta is not None else p.delta

    def rng(self, server_round: int, purpose: int) -> np.random.Generator:
        """A fresh generator for one privacy draw (OS entropy; seeded only in insecure mode)."""
        from fedkd.privacy.entropy import numpy_rng

        parts = (self.cfg.seed, server_round, purpose) if self.seeded else None
        return numpy_rng(parts)

    # -- round hooks ------------------------------------------------------------------------
    @property
    def releases_every_round(self) -> bool:
        """Whether the teacher is released even when no valid reply arrived."""
        return any(m.releases_every_round() for m in self.mechanisms)

    def check_budget(self, server_round: int, num_clients: int) -> None:
        """Raise :class:`BudgetReached` when the round would exceed ``privacy.max_epsilon``."""
        budget = self.cfg.privacy.max_epsilon
        if budget is None:
            return
        for mech in self.mechanisms:
            why = mech.would_exceed(server_round, num_clients, budget)
            if why is not None:
                raise BudgetReached(why)

    def on_send(self, server_round: int, chosen: list[int]) -> dict[int, dict[str, Any]]:
        """Every mechanism's charges at send; the extra config items of each client."""
        extra: dict[int, dict[str, Any]] = {}
        for mech in self.mechanisms:
            for cid, items in mech.on_send(server_round, chosen).items():
                extra.setdefault(cid, {}).update(items)
        return extra

    def on_reply(self, server_round: int, client_id: int, metrics: dict[str, Any]) -> None:
        """Every mechanism's checks of one decoded reply (raises ReplyError)."""
        for mech in self.mechanisms:
            mech.on_reply(server_round, client_id, metrics)

    def release(
        self, server_round: int, preds: np.ndarray, weights: np.ndarray, num_clients: int
    ) -> TeacherRelease:
        """The round's teacher; its ledger entries are appended before it is returned."""
        out = self._teacher.release(server_round, preds, weights, num_clients)
        self.ledger.extend(out.entries)
        return out

    def teacher(
        self, server_round: int, preds: np.ndarray, weights: np.ndarray, num_clients: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`release` as (answered rows, (rows, C) teacher probabilities)."""
        out = self.release(server_round, preds, weights, num_clients)
        return out.rows, out.teacher

    # -- reporting and state ----------------------------------------------------------------
    def epsilons(self) -> dict[str, Any]:
        """Cumulative ε per scope, recomputed from the ledger (PLD, replace-one)."""
        out: dict[str, Any] = {}
        for mech in self.mechanisms:
            out.update(mech.report())
        if out:
            out["accountant"] = "pld"
            out["epsilon_guarantee"] = not self.seeded
        return out

    def describe(self, row: dict[str, Any]) -> str:
        """A short suffix for the progress line."""
        from fedkd.mechanisms.report import progress_suffix

        return progress_suffix(row, self.seeded)

    def state_dict(self) -> dict[str, Any]:
        """Checkpoint state: the ledger, the sizes and each mechanism's own state.

        The noise generator is deliberately not saved.
        """
        state: dict[str, Any] = {"ledger": self.ledger.to_dict(), "sizes": dict(self.sizes)}
        for mech in self.mechanisms:
            state.update(mech.state_dict())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self._ledger = PrivacyLedger.from_dict(state["ledger"])
        self.sizes = {int(k): int(v) for k, v in state.get("sizes", {}).items()}
        for mech in self.mechanisms:
            mech.load_state_dict(state)
