"""Shared budget check and report of the client-level mechanisms (Gaussian, PATE)."""

from __future__ import annotations

from fedkd.mechanisms.base import Mechanism
from fedkd.privacy.ledger import Release


class ClientLevel(Mechanism):
    """A mechanism charging the ``server`` subject once per round (replace one client)."""

    scope = "client"
    releases_teacher = True

    def candidate(self, server_round: int, num_clients: int) -> Release:
        """The ledger entry of the round's worst-case release (for the budget check)."""
        raise NotImplementedError

    def _history(self) -> list[Release]:
        return [r for r in self.ctx.ledger.releases if r.scope == "client"]

    def would_exceed(self, server_round: int, num_clients: int, budget: float) -> str | None:
        """PLD ε of the client-level history plus :meth:`candidate` against ``budget``."""
        from fedkd.privacy.accounting import epsilon, would_exceed

        delta = self.ctx.client_delta
        history = self._history()
        if not would_exceed(history, [self.candidate(server_round, num_clients)], delta, budget):
            return None
        spent = epsilon(history, delta) if history else 0.0
        return (
            f"privacy budget reached at round {server_round} "
            f"(ε = {spent:.3f} of {budget:g}, client level, δ = {delta:g})"
        )

    def report(self) -> dict[str, float]:
        """``epsilon_client`` (PLD over every client-level release) and ``delta_client``."""
        from fedkd.privacy.accounting import epsilon

        history = self._history()
        delta = self.ctx.client_delta
        return {
            "epsilon_client": epsilon(history, delta) if history else 0.0,
            "delta_client": delta,
        }
