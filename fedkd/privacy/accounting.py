"""Privacy accounting recomputed from the ledger (PLD enforced; RDP and PRV as cross-checks).

Every release in the ledger is reduced to *sampled Gaussian components*
``(z, q, count, relation)``: ``count`` compositions of a Gaussian mechanism with noise
multiplier ``z``, Poisson-subsampled at rate ``q`` (q = 1: no subsampling), analysed under
the neighbouring ``relation`` the release was recorded with.

Neighbouring relations, in ``dp_accounting``'s convention (``NeighboringRelation``):

* ``add_remove``: one record added or removed; ``z`` = noise std / the L2 distance one
  record can move the released statistic.
* ``replace_one``: one record replaced by another; ``z`` = noise std / the L2 norm bound of
  one record's contribution, so a replacement moves the statistic by up to ``2/z`` noise
  standard deviations (``dp_accounting.pld`` REPLACE adjacency: μ(x + s) against
  μ(x − s)). fedkd records every release under ``replace_one`` because what it publishes
  (dataset sizes in replies and the ledger, the number of clients) would let an adversary
  tell add from remove (see docs/privacy.md).

Mechanisms:

* ``dpsgd``: ``(σ, q, steps)``; one example's clipped gradient has norm ≤ C and the noise
  is σC (Abadi et al. 2016).
* ``gaussian``: ``(σ, q, 1)`` per round; one client's prediction matrix is clipped to
  Frobenius norm S and the sum gets N(0, σ²S²).
* ``pate``: ONE component per round, because every query of a round shares the round's
  client sample: the round's GNMax answers (noise σ2 on vote counts) and threshold checks
  (noise σ1 on the max count) form one Gaussian mechanism on the concatenated statistics.
  One teacher's vote is a one-hot vector per query (norm 1) and moves a max count by ≤ 1.
  With q < 1 the per-teacher norm bound gives ``1/z² = a/σ2² + c/σ1²`` (a GNMax-charged
  queries, c checked queries). With q = 1 the relation's exact sensitivity is used: a
  replaced vote moves the histogram by √2, the max count by 1, so ``(2/z)² = 2a/σ2² +
  c/σ1²``; under add/remove ``1/z² = 2a/σ2² + c/σ1²`` (√2 kept, conservative). Papernot et
  al. 2018, "Scalable Private Learning with PATE" (ICLR), Proposition 8, give the per-query
  data-independent bounds these reduce to. Confident-GNMax is charged GNMax noise on every
  *checked* query (a = c), not only the answered ones: the count of answered queries is
  data-dependent, and charging it would need a privacy-filter argument.

Accountants: ``pld`` (``dp_accounting.pld.PLDAccountant``, pessimistic estimate, both
relations) is the one every run enforces and prints. ``rdp`` (Mironov et al. 2019, via
``opacus.accountants.analysis.rdp``) and ``prv`` (Opacus) support add/remove only; under
``replace_one`` they apply where q = 1 (a plain Gaussian with sensitivity 2/z) and return
``None`` otherwise. GDP is refused: it can under-state ε.
"""

from __future__ import annotations

import functools
import logging
import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from fedkd.privacy.ledger import MECHANISM_SCOPE, PrivacyLedger, Release
from fedkd.privacy.lower_bound import surely_over
from fedkd.registry import Registry

logger = logging.getLogger(__name__)

#: RDP orders: Opacus' default grid (1.1..10.9 step 0.1, 12..63) widened at both ends
#: (1.01..1.09 and 64..1024), so small-ε and large-ε settings do not hit the grid edge.
#: Inside [1.1, 63] it is exactly Opacus' grid, so ε there equals Opacus' RDPAccountant.
DEFAULT_ORDERS: tuple[float, ...] = tuple(
    [1 + x / 100.0 for x in range(1, 10)]
    + [1 + x / 10.0 for x in range(1, 100)]
    + [float(a) for a in range(12, 64)]
    + [64.0, 80.0, 96.0, 128.0, 160.0, 192.0, 256.0, 384.0, 512.0, 768.0, 1024.0]
)

ENFORCED = "pld"  # the accountant behind every printed ε and every budget check
_GDP_REFUSAL = "the GDP accountant can under-state ε; not allowed for reported numbers"
PLD_INTERVAL = 1e-4  # value discretisation of the enforced PLD accountant

Component = tuple[float, float, int, str]  # (z, q, count, relation)


# --------------------------------------------------------------------------- equivalences


def _pate_noise_multiplier(release: Release) -> float:
    """z of one PATE round (see the module docstring)."""
    sigma2, answered = float(release.noise_multiplier), release.steps
    checked = release.threshold_checks
    sigma1 = float(release.sigma_threshold) if checked else 1.0
    if release.sample_rate < 1.0 or release.relation == "add_remove":
        scale = 2.0 if release.relation == "add_remove" else 1.0
        inverse_sq = scale * answered / sigma2**2 + checked / sigma1**2
    else:  # replace_one without subsampling: exact sensitivity, (2/z)^2 = |Δ|^2
        inverse_sq = (2.0 * answered / sigma2**2 + checked / sigma1**2) / 4.0
    return 1.0 / math.sqrt(inverse_sq)


def components_of(release: Release) -> tuple[Component, ...]:
    """Reduce a release to sampled Gaussian components ``(z, q, count, relation)``.

    Returns an empty tuple when the release charged nothing (a PATE round with no query).
    """
    q = float(release.sample_rate)
    if release.mechanism in ("dpsgd", "gaussian"):
        if release.steps == 0:
            return ()
        return ((float(release.noise_multiplier), q, int(release.steps), release.relation),)
    if release.mechanism == "pate":
        if release.steps == 0 and release.threshold_checks == 0:
            return ()
        return ((_pate_noise_multiplier(release), q, 1, release.relation),)
    raise ValueError(f"unknown mechanism {release.mechanism!r}")  # pragma: no cover


def _components(releases: Sequence[Release]) -> tuple[Component, ...]:
    """All components of one subject's releases, identical ``(z, q, relation)`` merged.

    Composition is commutative, so merging counts changes nothing but the run time. The
    result is sorted, so equal histories give equal (cacheable) keys.
    """
    _single_subject(releases)
    counts: dict[tuple[float, float, str], int] = {}
    for release in releases:
        for z, q, count, relation in components_of(release):
            counts[(z, q, relation)] = counts.get((z, q, relation), 0) + count
    return tuple(sorted((z, q, n, rel) for (z, q, rel), n in counts.items()))


def _single_subject(releases: Sequence[Release]) -> None:
    subjects = {r.subject for r in releases}
    if len(subjects) > 1:
        raise ValueError(
            f"ε is per subject; these releases mix subjects {sorted(subjects)} "
            "(group them with PrivacyLedger.for_subject, or use report/would_exceed)"
        )
    relations = {r.relation for r in releases}
    if len(relations) > 1:
        raise ValueError(f"one subject's releases mix neighbouring relations {sorted(relations)}")


def _check_delta_range(delta: float) -> None:
    if not (isinstance(delta, int | float) and 0 < delta < 1):
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")


def _add_remove_view(components: Sequence[Component]) -> list[tuple[float, float, int]] | None:
    """Components as add/remove ``(z, q, count)``; None if one is replace-one with q < 1.

    A replace-one component without subsampling is a plain Gaussian whose sensitivity is
    twice the per-record bound: add/remove noise multiplier z/2.
    """
    out = []
    for z, q, count, relation in components:
        if relation == "add_remove":
            out.append((z, q, count))
        elif q >= 1.0:
            out.append((z / 2.0, 1.0, count))
        else:
            return None
    return out


def _cross_check_view(
    releases: Sequence[Release], delta: float
) -> list[tuple[float, float, int]] | float | None:
    """What the add/remove-only accountants (RDP, PRV) can take: the add/remove view of the
    releases, 0.0 when nothing was released, None when a component is beyond them."""
    _check_delta_range(delta)
    components = _components(releases)
    if not components:
        return 0.0
    return _add_remove_view(components)


# --------------------------------------------------------------------------- accountants


def pld_epsilon(
    releases: Sequence[Release], delta: float, value_discretization_interval: float = PLD_INTERVAL
) -> float:
    """ε of one subject's releases with ``dp_accounting``'s PLD accountant (enforced).

    Each component becomes ``SelfComposedDpEvent(PoissonSampledDpEvent(q,
    GaussianDpEvent(z)), count)`` (plain ``GaussianDpEvent(z)`` when q = 1), composed by
    ``PLDAccountant(neighboring_relation)`` of the releases' relation.

    Returns
    -------
    float
        ε at ``delta``; 0.0 for an empty history.
    """
    _check_delta_range(delta)
    components = _components(releases)
    if not components:
        return 0.0
    return _pld_cached(components, float(delta), float(value_discretization_interval))


@functools.lru_cache(maxsize=4096)
def _pld_cached(components: tuple[Component, ...], delta: float, interval: float) -> float:
    from dp_accounting import dp_event
    from dp_accounting.pld import PLDAccountant
    from dp_accounting.privacy_accountant import NeighboringRelation

    relation = {
        "add_remove": NeighboringRelation.ADD_OR_REMOVE_ONE,
        "replace_one": NeighboringRelation.REPLACE_ONE,
    }[components[0][3]]
    events = []
    for z, q, count, _ in components:
        inner: Any = dp_event.GaussianDpEvent(z)
        if q < 1.0:
            inner = dp_event.PoissonSampledDpEvent(q, inner)
        events.append(dp_event.SelfComposedDpEvent(inner, count))
    accountant = PLDAccountant(
        neighboring_relation=relation, value_discretization_interval=interval
    )
    accountant.compose(dp_event.ComposedDpEvent(events))
    return float(accountant.get_epsilon(delta))


def rdp_epsilon(
    releases: Sequence[Release], delta: float, orders: Sequence[float] | None = None
) -> float | None:
    """ε of one subject's releases by Rényi-DP composition (cross-check).

    Sampled-Gaussian RDP of Mironov et al. 2019 via ``opacus.accountants.analysis.rdp``;
    conversion to (ε, δ) by Balle et al. 2020 (Theorem 21 of arXiv:1905.09982). Returns
    ``None`` when a component is replace-one with q < 1 (no RDP bound implemented for it),
    0.0 for an empty history.
    """
    from opacus.accountants.analysis.rdp import get_privacy_spent

    view = _cross_check_view(releases, delta)
    if not view:
        return view  # 0.0 for nothing released, None where RDP does not apply
    alphas = tuple(float(a) for a in (DEFAULT_ORDERS if orders is None else orders))
    total = np.zeros(len(alphas))
    for z, q, count in view:
        total += count * np.asarray(_unit_rdp(z, q, alphas))
    eps, _ = get_privacy_spent(orders=list(alphas), rdp=total, delta=delta)
    return float(eps)


@functools.lru_cache(maxsize=512)
def _unit_rdp(z: float, q: float, orders: tuple[float, ...]) -> tuple[float, ...]:
    """RDP of ONE add/remove Poisson-subsampled Gaussian step at each order (pure, cached)."""
    from opacus.accountants.analysis.rdp import compute_rdp

    values = compute_rdp(q=q, noise_multiplier=z, steps=1, orders=list(orders))
    return tuple(float(v) for v in values)


def prv_epsilon(releases: Sequence[Release], delta: float, eps_error: float = 0.01) -> float | None:
    """ε with Opacus' PRV accountant (upper estimate; cross-check). ``None`` as for RDP."""
    from opacus.accountants import PRVAccountant

    view = _cross_check_view(releases, delta)
    if not view:
        return view  # 0.0 for nothing released, None where PRV does not apply
    accountant = PRVAccountant()
    accountant.history = list(view)
    with warnings.catch_warnings():
        # Opacus' PRV takes log(0) at q = 1 on its way to a finite answer.
        warnings.filterwarnings("ignore", "divide by zero encountered in log", RuntimeWarning)
        return float(accountant.get_epsilon(delta=delta, eps_error=eps_error))


#: Accountant name -> ε of one subject's releases at δ (None: cannot account them).
ACCOUNTANTS: Registry[Callable[[Sequence[Release], float], float | None]] = Registry(
    "accountant", {"pld": pld_epsilon, "rdp": rdp_epsilon, "prv": prv_epsilon}
)


def epsilon(releases: Sequence[Release], delta: float, accountant: str = ENFORCED) -> float:
    """ε of one subject's releases with the named accountant.

    Raises
    ------
    ValueError
        For ``"gdp"``, an unknown accountant, or one that cannot account these releases
        (RDP/PRV on replace-one with subsampling).
    """
    if accountant == "gdp":
        raise ValueError(_GDP_REFUSAL)
    value = ACCOUNTANTS.lookup(accountant)(releases, delta)
    if value is None:
        raise ValueError(f"the {accountant} accountant cannot account replace-one with q < 1")
    return value


def check_delta(delta: float, population: int) -> None:
    """Refuse a δ that is not below 1/N.

    A δ ≥ 1/N allows mechanisms that publish one record in the clear with probability δ and
    still satisfy (ε, δ)-DP; it is meaningless as a guarantee.

    Raises
    ------
    ValueError
        ``"privacy.delta=... must be < 1/N = ... (N = ...)"`` when ``delta >= 1/population``,
        or when δ is not in (0, 1) or N < 1.
    """
    if isinstance(population, bool) or not isinstance(population, int) or population < 1:
        raise ValueError(f"population must be an integer >= 1, got {population!r}")
    _check_delta_range(delta)
    if delta >= 1.0 / population:
        raise ValueError(
            f"privacy.delta={delta:g} must be < 1/N = {1.0 / population:g} (N = {population})"
        )


def _by_subject(releases: Iterable[Release]) -> dict[str, list[Release]]:
    groups: dict[str, list[Release]] = {}
    for release in releases:
        groups.setdefault(release.subject, []).append(release)
    return groups


def would_exceed(
    releases: Sequence[Release],
    candidate_releases: Sequence[Release],
    delta: float,
    max_epsilon: float,
    accountant: str = ENFORCED,
) -> bool:
    """Whether recording ``candidate_releases`` would take some subject over the budget.

    For each subject touched by a candidate, ε of (its past releases + its candidates) is
    recomputed with ``accountant``; the answer is True if any exceeds ``max_epsilon``.
    Checked before each round with the round's worst case (a privacy filter: the run's
    guarantee is then ``max_epsilon``). A history whose exact lower bound
    (:func:`fedkd.privacy.lower_bound.surely_over`) is already over the budget is answered
    without building its PLD; the answer is the same, only sooner.
    """
    if not (isinstance(max_epsilon, int | float) and max_epsilon > 0):
        raise ValueError(f"max_epsilon must be > 0, got {max_epsilon!r}")
    fast = accountant == ENFORCED  # the bound stands in for the PLD only, after its checks
    if fast:
        _check_delta_range(delta)
    past = _by_subject(releases)
    for subject, candidates in _by_subject(candidate_releases).items():
        history = past.get(subject, []) + candidates
        if fast and surely_over(_components(history), delta, max_epsilon):
            return True  # an exact lower bound is over: no PLD needed (lower_bound.py)
        if epsilon(history, delta, accountant) > max_epsilon:
            return True
    return False


def _summary(history: Sequence[Release], delta: float) -> dict[str, Any]:
    """ε of one subject by every accountant, and what its releases were."""
    first = history[0]
    return {
        "relation": first.relation,
        "delta": delta,
        "eps": pld_epsilon(history, delta),
        "eps_rdp": rdp_epsilon(history, delta),
        "eps_prv": prv_epsilon(history, delta),
        "noise_multiplier": sorted({r.noise_multiplier for r in history}),
        "sample_rate": sorted({r.sample_rate for r in history}),
        "steps": int(sum(r.steps for r in history)),
        "threshold_checks": int(sum(r.threshold_checks for r in history)),
        "rounds": len({r.round for r in history}),
        "population": max(r.population for r in history),
        "seeded": any(r.seeded for r in history),
    }


def report(ledger: PrivacyLedger, delta_example: float, delta_client: float) -> list[dict]:
    """The ε table of a run, recomputed from the ledger.

    Returns
    -------
    list of dict
        One row per mechanism and scope. Keys: ``mechanism``, ``scope``, ``subject``,
        ``accountant`` (the enforced one, ``pld``), ``eps`` (by it), ``eps_rdp`` and
        ``eps_prv`` (cross-checks; None where they do not apply), ``relation``, ``delta``,
        ``noise_multiplier`` and ``sample_rate`` (the distinct values), ``steps``,
        ``threshold_checks``, ``rounds``, ``population``, ``seeded``. Example-level DP-SGD
        gives one row for the client with the largest ε (client data sets are disjoint, so
        the system guarantee for one example is the maximum over clients) with
        ``clients``, ``eps_min`` and ``eps_median`` over clients added.

    Raises
    ------
    ValueError
        If a δ is not below 1/N for the population recorded in the releases.
    """
    rows: list[dict] = []
    example = _by_subject(r for r in ledger.releases if r.scope == "example")
    if example:
        per_client = {}
        for subject, history in example.items():
            check_delta(delta_example, max(r.population for r in history))
            per_client[subject] = _summary(history, delta_example)
        worst = max(per_client, key=lambda s: per_client[s]["eps"])
        values = [row["eps"] for row in per_client.values()]
        rows.append(
            {
                "mechanism": "dpsgd",
                "scope": "example",
                "subject": worst,
                "accountant": ENFORCED,
                **per_client[worst],
                "clients": len(per_client),
                "eps_min": float(min(values)),
                "eps_median": float(np.median(values)),
            }
        )
    client = _by_subject(r for r in ledger.releases if r.scope == "client")
    for subject, history in client.items():
        check_delta(delta_client, max(r.population for r in history))
        order = [m for m in MECHANISM_SCOPE if any(r.mechanism == m for r in history)]
        rows.append(
            {
                "mechanism": "+".join(order),
                "scope": "client",
                "subject": subject,
                "accountant": ENFORCED,
                **_summary(history, delta_client),
            }
        )
    return rows


def noise_for_target_epsilon(
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    relation: str = "replace_one",
) -> float:
    """Smallest noise multiplier (to 0.1 %) whose ``steps`` sampled-Gaussian steps stay
    within ``target_epsilon`` by the enforced PLD accountant.

    Calibrate once, for ALL planned steps of the whole run, and keep the result:
    re-calibrating mid-run would assume a zero starting budget. The search runs on a
    coarse PLD grid first and is then checked, and raised if needed, on the enforced grid,
    so the result never overshoots the target.
    """
    _check_delta_range(delta)
    if not target_epsilon > 0:
        raise ValueError(f"target_epsilon must be > 0, got {target_epsilon!r}")
    if not 0 < sample_rate <= 1:
        raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    return _calibrate(float(target_epsilon), float(delta), float(sample_rate), steps, relation)


@functools.lru_cache(maxsize=256)
def _calibrate(target: float, delta: float, q: float, steps: int, relation: str) -> float:
    def eps(z: float, interval: float) -> float:
        return _pld_cached(((z, q, steps, relation),), delta, interval)

    lo, hi = 0.05, 1.0
    while eps(hi, 1e-3) > target:
        lo, hi = hi, hi * 2.0
        if hi > 1e4:
            raise ValueError(f"no noise multiplier below 1e4 reaches ε = {target}")
    while hi - lo > 1e-3 * hi:
        mid = (lo + hi) / 2.0
        lo, hi = (mid, hi) if eps(mid, 1e-3) > target else (lo, mid)
    while eps(hi, PLD_INTERVAL) > target:  # the enforced grid decides
        hi *= 1.001
    return hi
