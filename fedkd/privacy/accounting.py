"""Privacy accounting recomputed from the ledger (RDP, PLD, PRV; never GDP).

Every release in the ledger is reduced to one or more *equivalent sampled Gaussian
components* ``(z, q, count)``: ``count`` compositions of a Poisson-subsampled Gaussian
mechanism with sampling rate ``q`` and noise multiplier ``z`` (noise standard deviation
divided by the L2 sensitivity), under the add/remove-one neighbouring relation.

* ``dpsgd``: ``(σ, q, steps)``: Opacus DP-SGD, sensitivity = the clipping norm C,
  noise σC (Abadi et al. 2016).
* ``gaussian``: ``(σ, q, steps)``: the client's whole prediction matrix is clipped to
  Frobenius norm S and the server adds N(0, σ²S²) to the sum; adding or removing one client
  moves the sum by at most S.
* ``pate``: the vote histogram with GNMax noise σ2 has L2 sensitivity √2 (one teacher's
  vote moves from one class to another), so GNMax ≡ Gaussian with noise multiplier
  ``σ2/√2``, charged once per answered query: RDP(α) = α/σ2². The Confident-GNMax threshold
  check (max count + N(0, σ1²)) has sensitivity 1, so it ≡ Gaussian with noise multiplier
  ``σ1``, charged once per checked query: RDP(α) = α/(2σ1²). These are the data-independent
  bounds of Papernot et al. 2018, "Scalable Private Learning with PATE", ICLR 2018
  (Proposition 8; reference code ``tensorflow/privacy/research/pate_2018/core.py``:
  ``rdp_data_independent_gaussian(σ, α) = α/σ²`` and the threshold check computed as the
  same function at ``σ1·√2``). The same equivalences feed the RDP, PLD and PRV accountants,
  so the three are consistent by construction. With ``q < 1`` the sampled-Gaussian
  analysis is the add/remove-one-client one, under which the histogram's sensitivity is 1
  ≤ √2, so charging √2 stays conservative.

  Charging σ2 only for *answered* queries follows the paper: whether a query is answered is
  the output of the (charged) threshold mechanism, so the number of GNMax charges depends
  only on released outputs. Strictly, a data-dependent number of compositions is covered by
  a privacy filter (Feldman & Zrnic 2021): the guarantee of a run is its pre-set budget,
  enforced with :func:`would_exceed` before each round. For a fully data-independent charge,
  record ``steps = threshold_checks``.

The data-dependent PATE analysis (smooth sensitivity) is deliberately not implemented here.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from fedkd.privacy.ledger import MECHANISM_SCOPE, PrivacyLedger, Release

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

ACCOUNTANTS: tuple[str, ...] = ("rdp", "pld", "prv")
_GDP_REFUSAL = "the GDP accountant can under-state ε; not allowed for reported numbers"

GaussianComponent = tuple[float, float, int]


# --------------------------------------------------------------------------- equivalences


def equivalent_gaussian_components(release: Release) -> tuple[GaussianComponent, ...]:
    """Reduce a release to Poisson-subsampled Gaussian components ``(z, q, count)``.

    Parameters
    ----------
    release : Release
        One ledger entry.

    Returns
    -------
    tuple of (float, float, int)
        ``(noise_multiplier, sample_rate, count)`` triples with ``count > 0``; empty if the
        release charged nothing (e.g. a PATE round with no query answered or checked).

    Notes
    -----
    ``dpsgd`` and ``gaussian``: ``(σ, q, steps)``. ``pate``: ``(σ2/√2, q, answered)`` for
    GNMax (sensitivity √2) and ``(σ1, q, checked)`` for the threshold check (sensitivity 1);
    see the module docstring and Papernot et al. 2018.
    """
    q = float(release.sample_rate)
    if release.mechanism in ("dpsgd", "gaussian"):
        parts = [(float(release.noise_multiplier), q, release.steps)]
    elif release.mechanism == "pate":
        parts = [(float(release.noise_multiplier) / math.sqrt(2.0), q, release.steps)]
        if release.threshold_checks > 0:
            assert release.sigma_threshold is not None  # guaranteed by Release validation
            parts.append((float(release.sigma_threshold), q, release.threshold_checks))
    else:  # pragma: no cover - Release validation rejects other mechanisms
        raise ValueError(f"unknown mechanism {release.mechanism!r}")
    return tuple((z, rate, int(n)) for z, rate, n in parts if n > 0)


def _components(releases: Sequence[Release]) -> list[GaussianComponent]:
    """All components of one subject's releases, identical ``(z, q)`` pairs merged.

    Composition is commutative, so merging counts changes nothing but the run time (a
    ledger keeps one entry per round; the accountants need one term per distinct (z, q)).
    """
    _single_subject(releases)
    counts: dict[tuple[float, float], int] = {}
    for release in releases:
        for z, q, count in equivalent_gaussian_components(release):
            counts[(z, q)] = counts.get((z, q), 0) + count
    return [(z, q, count) for (z, q), count in counts.items()]


def _single_subject(releases: Sequence[Release]) -> None:
    subjects = {r.subject for r in releases}
    if len(subjects) > 1:
        raise ValueError(
            f"ε is per subject; these releases mix subjects {sorted(subjects)} "
            "(group them with PrivacyLedger.for_subject, or use report/would_exceed)"
        )
    scopes = {r.scope for r in releases}
    if len(scopes) > 1:  # pragma: no cover - one subject never has two scopes in practice
        raise ValueError(f"releases mix scopes {sorted(scopes)}")


def _check_delta_range(delta: float) -> None:
    if not (isinstance(delta, int | float) and 0 < delta < 1):
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")


# --------------------------------------------------------------------------- accountants


def rdp_epsilon(
    releases: Sequence[Release], delta: float, orders: Sequence[float] | None = None
) -> float:
    """ε of one subject's releases by Rényi-DP composition.

    Parameters
    ----------
    releases : sequence of Release
        Releases about a single subject.
    delta : float
        Target δ in (0, 1).
    orders : sequence of float, optional
        RDP orders α > 1; default :data:`DEFAULT_ORDERS`.

    Returns
    -------
    float
        ε at ``delta``; 0.0 for an empty history.

    Notes
    -----
    Sampled-Gaussian RDP from Mironov et al. 2019 via
    ``opacus.accountants.analysis.rdp.compute_rdp``; PATE components use the equivalences of
    :func:`equivalent_gaussian_components` (for q = 1, ``compute_rdp`` is exactly
    α/(2z²), i.e. α/σ2² for GNMax and α/(2σ1²) for the threshold check, Papernot et al.
    2018). RDP curves add up; conversion to (ε, δ) by Balle et al. 2020 (Theorem 21 of
    arXiv:1905.09982) in ``get_privacy_spent``.
    """
    from opacus.accountants.analysis.rdp import get_privacy_spent

    _check_delta_range(delta)
    if not _components(releases):
        return 0.0
    alphas = list(DEFAULT_ORDERS if orders is None else orders)
    total = rdp_curve(releases, alphas)
    eps, best_order = get_privacy_spent(orders=alphas, rdp=total, delta=delta)
    logger.debug("rdp_epsilon: eps=%s at order %s", eps, best_order)
    return float(eps)


def rdp_curve(releases: Sequence[Release], orders: Sequence[float] | None = None) -> np.ndarray:
    """Composed RDP ε(α) of one subject's releases at each order (for inspection and tests)."""
    alphas = tuple(float(a) for a in (DEFAULT_ORDERS if orders is None else orders))
    total = np.zeros(len(alphas))
    for z, q, count in _components(releases):
        total += count * np.asarray(_unit_rdp(z, q, alphas))
    return total


@functools.lru_cache(maxsize=512)
def _unit_rdp(z: float, q: float, orders: tuple[float, ...]) -> tuple[float, ...]:
    """RDP of ONE Poisson-subsampled Gaussian step at each order (cached: it is pure).

    ``compute_rdp`` is linear in the number of steps, so ``count * _unit_rdp`` is exact.
    """
    from opacus.accountants.analysis.rdp import compute_rdp

    values = compute_rdp(q=q, noise_multiplier=z, steps=1, orders=list(orders))
    return tuple(float(v) for v in values)


def pld_epsilon(
    releases: Sequence[Release], delta: float, value_discretization_interval: float = 1e-4
) -> float:
    """ε of one subject's releases with Google's privacy-loss-distribution accountant.

    Each component ``(z, q, count)`` becomes
    ``SelfComposedDpEvent(PoissonSampledDpEvent(q, GaussianDpEvent(z)), count)`` (plain
    ``GaussianDpEvent(z)`` when q = 1), all composed in a ``ComposedDpEvent`` and evaluated
    by ``dp_accounting.pld.PLDAccountant`` (add/remove-one neighbours).

    Parameters
    ----------
    releases : sequence of Release
        Releases about a single subject.
    delta : float
        Target δ in (0, 1).
    value_discretization_interval : float
        PLD discretisation; smaller is tighter and slower.

    Returns
    -------
    float
        ε at ``delta``; 0.0 for an empty history.
    """
    from dp_accounting import dp_event
    from dp_accounting.pld import PLDAccountant

    _check_delta_range(delta)
    components = _components(releases)
    if not components:
        return 0.0
    events = []
    for z, q, count in components:
        inner: Any = dp_event.GaussianDpEvent(z)
        if q < 1.0:
            inner = dp_event.PoissonSampledDpEvent(q, inner)
        events.append(dp_event.SelfComposedDpEvent(inner, count))
    accountant = PLDAccountant(value_discretization_interval=value_discretization_interval)
    accountant.compose(dp_event.ComposedDpEvent(events))
    return float(accountant.get_epsilon(delta))


def prv_epsilon(releases: Sequence[Release], delta: float, eps_error: float = 0.01) -> float:
    """ε of one subject's releases with Opacus' PRV accountant (upper estimate).

    The components become the accountant's history ``[(z, q, count), ...]``; the returned
    value is PRV's upper bound, about ``eps_error`` above the PLD value.
    """
    from opacus.accountants import PRVAccountant

    _check_delta_range(delta)
    components = _components(releases)
    if not components:
        return 0.0
    accountant = PRVAccountant()
    accountant.history = [(z, q, count) for z, q, count in components]
    return float(accountant.get_epsilon(delta=delta, eps_error=eps_error))


def epsilon(releases: Sequence[Release], delta: float, accountant: str = "rdp") -> float:
    """ε of one subject's releases with the named accountant.

    Parameters
    ----------
    releases : sequence of Release
        Releases about a single subject.
    delta : float
        Target δ.
    accountant : {"rdp", "pld", "prv"}
        ``"gdp"`` is refused: it can under-state ε (by up to 44 % on this project's settings).

    Raises
    ------
    ValueError
        For ``"gdp"`` or an unknown accountant.
    """
    if accountant == "gdp":
        raise ValueError(_GDP_REFUSAL)
    if accountant == "rdp":
        return rdp_epsilon(releases, delta)
    if accountant == "pld":
        return pld_epsilon(releases, delta)
    if accountant == "prv":
        return prv_epsilon(releases, delta)
    raise ValueError(f"unknown accountant {accountant!r}; choose from {ACCOUNTANTS}")


# --------------------------------------------------------------------------- budget, δ, reports


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
    accountant: str = "rdp",
) -> bool:
    """Whether recording ``candidate_releases`` would take some subject over the budget.

    For each subject touched by a candidate, ε of (its past releases + its candidates) is
    recomputed with ``accountant``; the answer is True if any exceeds ``max_epsilon``.
    Use it before each round and skip/stop the round when True (a privacy filter: the run's
    guarantee is then ``max_epsilon``).

    Parameters
    ----------
    releases : sequence of Release
        The history so far (any subjects).
    candidate_releases : sequence of Release
        What the next round would release.
    delta : float
        Target δ.
    max_epsilon : float
        The budget (> 0).
    accountant : {"rdp", "pld", "prv"}
        Accountant for the check ("gdp" refused).

    Returns
    -------
    bool
    """
    if not (isinstance(max_epsilon, int | float) and max_epsilon > 0):
        raise ValueError(f"max_epsilon must be > 0, got {max_epsilon!r}")
    if accountant == "gdp":
        raise ValueError(_GDP_REFUSAL)
    past = _by_subject(releases)
    for subject, candidates in _by_subject(candidate_releases).items():
        history = past.get(subject, []) + candidates
        if epsilon(history, delta, accountant) > max_epsilon:
            return True
    return False


def report(ledger: PrivacyLedger, delta_example: float, delta_client: float) -> list[dict]:
    """The ε table of a run, recomputed from the ledger with RDP and PLD.

    Parameters
    ----------
    ledger : PrivacyLedger
        The run's releases.
    delta_example : float
        δ for example-level guarantees (DP-SGD); must be < 1/N for every client's N.
    delta_client : float
        δ for client-level guarantees (Gaussian, PATE); must be < 1/number of clients.

    Returns
    -------
    list of dict
        Rows with keys ``mechanism``, ``scope``, ``subject``, ``delta``, ``eps_rdp``,
        ``eps_pld``. Example-level DP-SGD gives one row with subject ``"max over clients"``:
        client datasets are disjoint, so by parallel composition the system guarantee for
        one example is the maximum over clients (each of the two ε columns is maximised
        separately). Client-level releases give one row per subject (normally
        ``"server"``); if both Gaussian and PATE releases exist they are composed and the
        mechanism reads ``"gaussian+pate"``.

    Raises
    ------
    ValueError
        If a δ is not below 1/N for the population recorded in the releases.
    """
    rows: list[dict] = []
    example = [r for r in ledger.releases if r.scope == "example"]
    if example:
        groups = _by_subject(example)
        eps_rdp, eps_pld = 0.0, 0.0
        for history in groups.values():
            check_delta(delta_example, max(r.population for r in history))
            eps_rdp = max(eps_rdp, rdp_epsilon(history, delta_example))
            eps_pld = max(eps_pld, pld_epsilon(history, delta_example))
        mechanisms = sorted({r.mechanism for r in example})
        rows.append(
            {
                "mechanism": "+".join(mechanisms),
                "scope": "example",
                "subject": "max over clients",
                "delta": delta_example,
                "eps_rdp": eps_rdp,
                "eps_pld": eps_pld,
            }
        )
    client = [r for r in ledger.releases if r.scope == "client"]
    for subject, history in _by_subject(client).items():
        check_delta(delta_client, max(r.population for r in history))
        order = [m for m in MECHANISM_SCOPE if any(r.mechanism == m for r in history)]
        rows.append(
            {
                "mechanism": "+".join(order),
                "scope": "client",
                "subject": subject,
                "delta": delta_client,
                "eps_rdp": rdp_epsilon(history, delta_client),
                "eps_pld": pld_epsilon(history, delta_client),
            }
        )
    return rows


def noise_for_target_epsilon(
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: str = "prv",
) -> float:
    """Noise multiplier that reaches ``target_epsilon`` after ``steps`` sampled-Gaussian steps.

    Calibrate once, for ALL planned steps of the whole run (every round of every epoch), and
    keep the result: re-calibrating mid-run would assume a zero starting budget. Uses
    ``opacus.accountants.utils.get_noise_multiplier`` (binary search, tolerance 0.01 in ε,
    never overshooting the target).

    Parameters
    ----------
    target_epsilon : float
        Budget ε (> 0).
    delta : float
        Target δ.
    sample_rate : float
        Poisson sampling rate q in (0, 1].
    steps : int
        Total planned steps (DP-SGD steps, or rounds for the Gaussian mechanism).
    accountant : {"prv", "rdp"}
        Opacus accountant used by the search ("gdp" refused).

    Returns
    -------
    float
        The noise multiplier σ.
    """
    from opacus.accountants.utils import get_noise_multiplier

    if accountant == "gdp":
        raise ValueError(_GDP_REFUSAL)
    if accountant not in ("prv", "rdp"):
        raise ValueError(f"noise calibration supports 'prv' or 'rdp', got {accountant!r}")
    _check_delta_range(delta)
    if not target_epsilon > 0:
        raise ValueError(f"target_epsilon must be > 0, got {target_epsilon!r}")
    if not 0 < sample_rate <= 1:
        raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    return float(
        get_noise_multiplier(
            target_epsilon=target_epsilon,
            target_delta=delta,
            sample_rate=sample_rate,
            steps=steps,
            accountant=accountant,
        )
    )


# --------------------------------------------------------------------------- Flower


def _flower_sample_size(sample_rate: float, population: int) -> int:
    size = round(sample_rate * population)
    if size < 1 or abs(size - sample_rate * population) > 1e-9 * population:
        raise ValueError(
            f"Flower's accountant needs an integer expected sample size: "
            f"sample_rate={sample_rate} x population={population} is not one"
        )
    return int(size)


def make_flower_accountant(
    population: int,
    delta: float,
    max_epsilon: float | None = None,
    orders: Sequence[float] | None = None,
) -> Any:
    """Flower's client-level RDP accountant for Poisson-sampled clients, add/remove-one.

    Returns a ``flwr.serverapp.RdpAccountant`` configured with ``SamplingMethod.POISSON``
    and ``NeighboringRelation.ADD_OR_REMOVE_ONE`` (it wraps ``dp_accounting`` RDP; it has
    ``compose``, ``get_epsilon``, ``would_exceed``, ``state_dict``/``load_state_dict``).
    Use :func:`flower_event` for its events.
    """
    from flwr.serverapp import NeighboringRelation, PrivacyConfig, RdpAccountant, SamplingMethod

    config = PrivacyConfig(
        target_delta=delta,
        population_size=population,
        neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
        sampling_method=SamplingMethod.POISSON,
        max_epsilon=max_epsilon,
    )
    return RdpAccountant(config, orders=None if orders is None else tuple(orders))


def flower_event(noise_multiplier: float, sample_rate: float, population: int) -> Any:
    """A ``flwr.serverapp.GaussianPrivacyEvent`` for one round of the central Gaussian mechanism.

    Flower describes Poisson sampling by the expected sample size
    ``sample_rate * population``, which must be an integer.
    """
    from flwr.serverapp import GaussianPrivacyEvent

    return GaussianPrivacyEvent(
        noise_multiplier=noise_multiplier,
        sample_size=_flower_sample_size(sample_rate, population),
        population_size=population,
    )


def flower_rdp_epsilon(
    noise_multiplier: float,
    sample_rate: float,
    population: int,
    rounds: int,
    delta: float,
    orders: Sequence[float] | None = None,
) -> float:
    """Client-level ε of ``rounds`` Poisson-sampled Gaussian releases by Flower's accountant.

    Parameters
    ----------
    noise_multiplier : float
        σ (noise std / clipping norm).
    sample_rate : float
        Poisson client-sampling rate q; ``q * population`` must be an integer.
    population : int
        Number of clients.
    rounds : int
        Releases (rounds) composed.
    delta : float
        Target δ.
    orders : sequence of float, optional
        RDP orders; default: dp_accounting's defaults (Flower's choice).

    Returns
    -------
    float
        ε from ``flwr.serverapp.RdpAccountant``; should agree with :func:`rdp_epsilon` on the
        equivalent ``gaussian`` releases up to the difference of the order grids.
    """
    accountant = make_flower_accountant(population, delta, orders=orders)
    accountant.compose(flower_event(noise_multiplier, sample_rate, population), count=rounds)
    return float(accountant.get_epsilon(delta))
