"""A cheap, exact lower bound on ε, so a budget check can say "over" without a PLD.

The enforced PLD accountant builds a privacy-loss distribution whose support grows with
the privacy loss: for a heavily composed Gaussian without subsampling (μ of 20 or more,
ε in the hundreds) one check takes seconds to minutes. Such a release is far over any
budget, and a lower bound that is already over the budget settles the check.

Why it is a lower bound on the ε of the accounted components (the ``(z, q, count,
relation)`` reduction of :mod:`fedkd.privacy.accounting`), hence on the pessimistic PLD ε
that every check enforces:

* Dropping mechanisms from a composition cannot raise ε: the output of a sub-composition
  is a post-processing of the output of the whole.
* The components without subsampling (q = 1) compose to one Gaussian mechanism with
  ``μ = sqrt(Σ (s · count) / z²)`` (the privacy loss of a Gaussian mechanism is Gaussian,
  and compositions of Gaussians add their μ² exactly; Dong, Roth and Su, "Gaussian
  Differential Privacy", JRSS-B 2022, Corollary 2), where a step moves the mean by s/z
  noise standard deviations: s = 1 under ``add_remove`` and s = 2 under ``replace_one``,
  ``dp_accounting``'s REPLACE_ONE convention for ``GaussianDpEvent(z)`` (μ(x + 1) against
  μ(x − 1)), which is the μ its PLD of these components has.
* A Gaussian mechanism with that μ is (ε, δ)-DP exactly when
  ``δ ≥ Φ(μ/2 − ε/μ) − e^ε Φ(−μ/2 − ε/μ)`` (Balle and Wang, "Improving the Gaussian
  Mechanism for Differential Privacy", ICML 2018, Theorem 8). If that δ at the budget ε is
  above the run's δ, the mechanism, and so every accountant's bound on the whole history,
  is over the budget.

This bound decides nothing else and is never printed: every reported ε is the PLD's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

#: The bound must clear δ by this factor before it is trusted (rounding in the two tail
#: terms; anything closer goes to the PLD accountant).
MARGIN = 1.1


def unsampled_mu(components: Sequence[tuple[float, float, int, str]]) -> float:
    """μ of the components without subsampling (q = 1), composed (see the module doc).

    Parameters
    ----------
    components
        ``(z, q, count, relation)`` tuples, as :mod:`fedkd.privacy.accounting` reduces
        ledger releases to.

    Returns
    -------
    float
        ``sqrt(Σ s² count / z²)`` over the components with ``q >= 1`` (s = 2 under
        ``replace_one``, 1 under ``add_remove``); 0.0 if there are none,
        ``inf`` if a ``z²`` is 0.0 (no noise, or a z that small: the PLD says ε = ∞).
    """
    total = 0.0
    for z, q, n, relation in components:
        if q >= 1.0:
            square = z * z  # not z**2: that raises OverflowError for a huge z
            shift = 2.0 if relation == "replace_one" else 1.0
            total += shift * shift * n / square if square > 0.0 else math.inf
    return math.sqrt(total)


def gaussian_delta(mu: float, epsilon: float) -> float:
    """The smallest δ for which a Gaussian mechanism of parameter ``mu`` is (ε, δ)-DP."""
    from scipy.special import log_ndtr, ndtr

    if mu <= 0.0:
        return 0.0
    first = float(ndtr(mu / 2 - epsilon / mu))
    second = math.exp(epsilon + float(log_ndtr(-mu / 2 - epsilon / mu)))
    return max(first - second, 0.0)


def surely_over(
    components: Sequence[tuple[float, float, int, str]], delta: float, max_epsilon: float
) -> bool:
    """True only if the history's true ε at ``delta`` is above ``max_epsilon``.

    False means "not settled here" (the caller then asks the PLD accountant), never
    "within budget".
    """
    mu = unsampled_mu(components)
    return mu > 0.0 and gaussian_delta(mu, max_epsilon) > MARGIN * delta
