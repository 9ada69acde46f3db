"""The exact lower bound behind would_exceed's fast path never says "over" wrongly."""

from __future__ import annotations

import math

import pytest
from dp_accounting import dp_event
from dp_accounting.pld import PLDAccountant
from dp_accounting.privacy_accountant import NeighboringRelation

from fedkd.privacy import accounting as acc
from fedkd.privacy import lower_bound
from fedkd.privacy.ledger import Release


def _pld_gaussian_epsilon(mu: float, delta: float) -> float:
    accountant = PLDAccountant(neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE)
    accountant.compose(dp_event.GaussianDpEvent(1.0 / mu))
    return accountant.get_epsilon(delta)


def _dpsgd(sigma, q, steps, relation="replace_one", round_=0):
    return Release("dpsgd", "example", "client-0", round_, sigma, q, steps, relation=relation)


@pytest.mark.parametrize("mu", [0.3, 1.0, 3.0, 8.0])
def test_the_analytic_delta_matches_dp_accountings_pld_of_one_gaussian(mu) -> None:
    # PLD's ε is a pessimistic upper bound, so the exact δ at it is at most the target δ,
    # and close to it (the two agree to the PLD's discretisation).
    delta = 1e-5
    eps = _pld_gaussian_epsilon(mu, delta)
    exact = lower_bound.gaussian_delta(mu, eps)
    assert exact <= delta
    assert exact >= 0.9 * delta
    assert lower_bound.gaussian_delta(mu, 0.9 * eps) > delta  # below ε: δ is larger


@pytest.mark.parametrize("relation", ["replace_one", "add_remove"])
@pytest.mark.parametrize(
    "history",
    [
        [(1.0, 1.0, 30)],  # far over any small budget (ε about 40)
        [(3.0, 1.0, 5)],
        [(1.0, 1.0, 20), (1.0, 0.05, 200)],  # sampled components are left out of the bound
        [(1.5, 0.2, 100)],  # nothing unsampled: never settled here
        [(2.0, 1.0, 3), (0.8, 0.01, 300), (3.0, 1.0, 50)],
    ],
)
@pytest.mark.parametrize("budget", [0.5, 2.0, 8.0, 30.0])
def test_surely_over_implies_the_enforced_pld_is_over(history, relation, budget) -> None:
    releases = [_dpsgd(z, q, n, relation, i) for i, (z, q, n) in enumerate(history)]
    components = acc._components(releases)
    if lower_bound.surely_over(components, 1e-5, budget):
        assert acc.pld_epsilon(releases, 1e-5) > budget


def test_would_exceed_answers_as_the_pld_alone_does(monkeypatch) -> None:
    cases = [
        ([_dpsgd(1.0, 1.0, 30)], 8.0),
        ([_dpsgd(3.0, 1.0, 5)], 8.0),
        ([_dpsgd(3.0, 1.0, 5)], 2.0),
        ([_dpsgd(1.0, 1.0, 20), _dpsgd(1.0, 0.05, 200, round_=1)], 8.0),
    ]
    fast = [acc.would_exceed([], candidate, 1e-5, budget) for candidate, budget in cases]
    monkeypatch.setattr(acc, "surely_over", lambda *args: False)
    slow = [acc.would_exceed([], candidate, 1e-5, budget) for candidate, budget in cases]
    assert fast == slow == [True, False, True, True]


def test_unsampled_mu_composes_the_q_one_components_only() -> None:
    components = [(2.0, 1.0, 4, "replace_one"), (1.0, 0.1, 100, "replace_one")]
    assert lower_bound.unsampled_mu(components) == pytest.approx(math.sqrt(4 * 4 / 4.0))
    assert lower_bound.unsampled_mu([(2.0, 1.0, 4, "add_remove")]) == pytest.approx(1.0)
    assert lower_bound.unsampled_mu([(1.0, 0.5, 10, "add_remove")]) == 0.0
    assert lower_bound.surely_over([(1.0, 0.5, 10, "add_remove")], 1e-5, 0.1) is False


def test_the_fast_path_settles_a_history_far_over_the_budget() -> None:
    components = acc._components([_dpsgd(1.0, 1.0, 30)])  # μ = sqrt(30), ε near 40
    assert lower_bound.surely_over(components, 1e-5, 8.0) is True
    assert lower_bound.surely_over(components, 1e-5, 200.0) is False


def test_would_exceed_validates_and_refuses_as_before_the_fast_path_answers() -> None:
    # A history far over the budget (the bound settles it) must still get the errors the
    # PLD path gives: a δ outside (0, 1), the GDP refusal, an accountant that cannot
    # account replace-one with q < 1.
    over = [_dpsgd(1.0, 1.0, 30)]
    assert lower_bound.surely_over(acc._components(over), 1e-5, 8.0) is True
    for bad_delta in (0.0, -1e-5):
        with pytest.raises(ValueError, match="delta must be in"):
            acc.would_exceed([], over, bad_delta, 8.0)
    with pytest.raises(ValueError, match="GDP"):
        acc.would_exceed([], over, 1e-5, 8.0, accountant="gdp")
    mixed = over + [_dpsgd(1.0, 0.1, 3, round_=1)]
    with pytest.raises(ValueError, match="cannot account replace-one"):
        acc.would_exceed([], mixed, 1e-5, 8.0, accountant="rdp")


def test_a_noise_free_component_is_over_budget_not_a_crash() -> None:
    # σ this small makes a PATE round's z underflow to 0.0 (and a tiny z's square to 0.0);
    # the PLD answers "over" (no noise: ε = ∞), and so must the bound.
    pate = Release("pate", "client", "server", 0, 1e-160, 1.0, 5, 1e-160, 5)
    assert acc._components([pate])[0][0] == 0.0
    assert lower_bound.unsampled_mu(acc._components([pate])) == math.inf
    assert lower_bound.unsampled_mu([(1e-170, 1.0, 1, "add_remove")]) == math.inf
    assert lower_bound.unsampled_mu([(1e200, 1.0, 1, "add_remove")]) == 0.0
    assert acc.would_exceed([], [pate], 1e-5, 100.0) is True


@pytest.mark.parametrize("relation", ["replace_one", "add_remove"])
def test_the_bound_never_says_over_at_the_plds_own_epsilon_for_a_pate_round(relation) -> None:
    # PATE folds the relation's sensitivity into z (under replace_one with q = 1 the PLD
    # shifts by 2/z, the bound by 1/z): the bound's δ at the PLD's ε stays below δ.
    rounds = [
        Release("pate", "client", "server", r, 8.0, 1.0, 10, 10.0, 10, relation=relation)
        for r in range(2)
    ]
    components = acc._components(rounds)
    eps = acc.pld_epsilon(rounds, 1e-5)
    assert lower_bound.gaussian_delta(lower_bound.unsampled_mu(components), eps) <= 1e-5
    assert lower_bound.surely_over(components, 1e-5, eps) is False
    assert lower_bound.surely_over(components, 1e-5, 0.8 * eps) is True  # it does fire below


@pytest.mark.parametrize("relation", ["replace_one", "add_remove"])
def test_the_bounds_mu_is_the_plds_for_an_unsampled_gaussian(relation) -> None:
    # The bound's μ for q = 1 components equals the μ of dp_accounting's PLD (shift 2/z
    # under replace_one): the exact δ at the PLD's ε is at most δ, and within 10 % of it.
    history = [_dpsgd(2.0, 1.0, 3, relation), _dpsgd(3.0, 1.0, 2, relation, round_=1)]
    eps = acc.pld_epsilon(history, 1e-5)
    exact = lower_bound.gaussian_delta(lower_bound.unsampled_mu(acc._components(history)), eps)
    assert 0.9e-5 <= exact <= 1e-5
