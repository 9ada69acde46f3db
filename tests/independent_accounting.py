"""An ε computed with dp_accounting alone, for tests that check fedkd's accounting against it."""

from __future__ import annotations

from dp_accounting import dp_event
from dp_accounting.pld import PLDAccountant
from dp_accounting.privacy_accountant import NeighboringRelation


def replace_one_epsilon(sigma: float, q: float, steps: int, delta: float) -> float:
    """dp_accounting PLD, replace-one, of ``steps`` Poisson-sampled Gaussians (z = σ)."""
    accountant = PLDAccountant(NeighboringRelation.REPLACE_ONE, value_discretization_interval=1e-4)
    accountant.compose(
        dp_event.SelfComposedDpEvent(
            dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(sigma)), steps
        )
    )
    return float(accountant.get_epsilon(delta))


def add_remove_epsilon(sigma: float, q: float, steps: int, delta: float) -> float:
    """dp_accounting PLD, add/remove-one, of ``steps`` Poisson-sampled Gaussians (z = σ)."""
    accountant = PLDAccountant(
        NeighboringRelation.ADD_OR_REMOVE_ONE, value_discretization_interval=1e-4
    )
    accountant.compose(
        dp_event.SelfComposedDpEvent(
            dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(sigma)), steps
        )
    )
    return float(accountant.get_epsilon(delta))
