"""Turn one target ε into each method's noise settings (for sweeps over ε).

The config has a target-ε key only for DP-SGD (``privacy.dpsgd.target_epsilon``). For the
client-level paths the noise is calibrated here, once, for the whole planned run, and
written into the existing keys:

* ``fedkd`` + ``dpsgd`` / ``central-dpsgd``: ``privacy.dpsgd.target_epsilon = ε``
  (example level, δ = ``privacy.delta``; fedkd and the baseline calibrate σ themselves).
* ``fedkd`` + ``gaussian``: ``privacy.gaussian.noise_multiplier`` so that ``rounds``
  Poisson-subsampled Gaussian releases (rate ``clients.sample_rate`` with Poisson sampling,
  else 1) reach ε by fedkd's enforced accountant (PLD, replace-one) at the client-level δ.
* ``fedkd`` + ``pate``: ``privacy.pate.sigma`` (and ``sigma_threshold`` when a threshold is
  set, equal to it) for ``rounds`` rounds charged as the run charges them: one release per
  round over ``distill.proxy_per_round`` queries, GNMax on every query plus every
  threshold check (see :mod:`fedkd.privacy.accounting`).
* ``dp-fedavg``: ``privacy.gaussian.noise_multiplier`` so that ``rounds`` Gaussian releases
  *without* sampling amplification reach ε, checked with Flower's ``RdpAccountant`` itself.
  σ is the noise multiplier relative to the sensitivity ``S / K`` of
  :mod:`fedkd.simulations.baselines.dpfedavg` (sum of clipped updates over the fixed number K of
  clients asked; noise std ``σ · S / K``), one release per round.

Every calibration is conservative (the resulting ε is at most the target).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

from fedkd.config import ConfigError
from fedkd.registry import Registry


def _get(raw: Mapping[str, Any], dotted: str, default: Any = None) -> Any:
    node: Any = raw
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def _set(raw: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def _search(eps_of: Callable[[float], float], target: float) -> float:
    """Smallest σ (to 0.1 %) with ``eps_of(σ) <= target``; ``eps_of`` decreases in σ."""
    lo, hi = 1e-2, 1.0
    while eps_of(hi) > target:
        lo, hi = hi, hi * 2
        if hi > 1e7:
            raise ConfigError(f"cannot reach ε={target:g}: noise would exceed 1e7")
    while hi - lo > 1e-3 * hi:
        mid = 0.5 * (lo + hi)
        if eps_of(mid) > target:
            lo = mid
        else:
            hi = mid
    return hi


def client_delta(raw: Mapping[str, Any]) -> float:
    """The client-level δ the run will report (``privacy.client_delta``, else ``delta``)."""
    value = _get(raw, "privacy.client_delta")
    return float(value if value is not None else _get(raw, "privacy.delta", 1e-5))


def _fedkd_eps(release: Any, rounds: int, delta: float) -> float:
    """ε by fedkd's enforced accountant of ``rounds`` copies of one round's release."""
    from dataclasses import replace

    from fedkd.privacy.accounting import epsilon

    return epsilon([replace(release, round=r) for r in range(rounds)], delta)


@lru_cache(maxsize=256)  # a search of many accountant calls; sweeps repeat it
def gaussian_sigma(epsilon: float, delta: float, rounds: int, sample_rate: float) -> float:
    """σ of fedkd's central Gaussian mechanism for ``rounds`` releases at rate q."""
    from fedkd.privacy.gaussian import release_for_round

    return _search(
        lambda z: _fedkd_eps(release_for_round(0, z, sample_rate, 2), rounds, delta), epsilon
    )


@lru_cache(maxsize=256)  # a search of many accountant calls; sweeps repeat it
def pate_sigma(
    epsilon: float, delta: float, rounds: int, queries: int, sample_rate: float, threshold: bool
) -> float:
    """σ (= σ2 = σ1) of PATE for ``rounds`` rounds of ``queries`` queries each, as charged
    (GNMax on every query, plus every threshold check)."""
    from fedkd.privacy.gnmax import release_for_round

    def eps_of(s: float) -> float:
        release = release_for_round(
            0,
            s,
            queries,
            2,
            sigma1=s if threshold else None,
            checked=queries if threshold else 0,
            sample_rate=sample_rate,
        )
        return _fedkd_eps(release, rounds, delta)

    return _search(eps_of, epsilon)


@lru_cache(maxsize=256)  # a search of many accountant calls; sweeps repeat it
def dp_fedavg_sigma(epsilon: float, delta: float, rounds: int, population: int) -> float:
    """σ of DP-FedAvg for ``rounds`` releases, no amplification, by Flower's RdpAccountant.

    The fixed-denominator mechanism has sensitivity ``S / K`` and noise std ``σ · S / K``,
    so each round is a Gaussian mechanism with noise multiplier exactly σ; ``population``
    and the event's sample size do not enter the no-amplification bound.
    """
    from flwr.serverapp import (
        GaussianPrivacyEvent,
        NeighboringRelation,
        PrivacyConfig,
        RdpAccountant,
        SamplingMethod,
    )

    def eps_of(z: float) -> float:
        acc = RdpAccountant(
            PrivacyConfig(
                target_delta=delta,
                population_size=population,
                neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
                sampling_method=SamplingMethod.NO_AMPLIFICATION,
            )
        )
        acc.compose(GaussianPrivacyEvent(z, population, population), count=rounds)
        return float(acc.get_epsilon(delta))

    return _search(eps_of, epsilon)


def apply_epsilon(method: str, raw: dict[str, Any], epsilon: float) -> dict[str, Any]:
    """Write the noise settings that give target ``epsilon`` into the raw config ``raw``.

    Parameters
    ----------
    method : str
        One of :data:`fedkd.simulations.baselines.METHODS`.
    raw : dict
        Nested raw config (modified in place and returned).
    epsilon : float
        Target ε; ``inf`` means non-private: ``privacy.mechanisms`` is emptied (a private
        baseline then runs with no noise would be meaningless, so ``central-dpsgd`` and
        ``dp-fedavg`` refuse ``inf``: sweep ``central`` / ``fedavg`` instead).

    Returns
    -------
    dict
        ``raw``.

    Raises
    ------
    ConfigError
        For a method that has no privacy knob, or ``inf`` for a private baseline.
    """
    if math.isinf(epsilon):
        if method in ("central-dpsgd", "dp-fedavg"):
            raise ConfigError(f"epsilon=inf for {method}: sweep the non-private baseline instead")
        if method == "fedkd":
            _set(raw, "privacy.mechanisms", [])
        return raw
    if not epsilon > 0:
        raise ConfigError(f"epsilon must be > 0, got {epsilon}")
    CALIBRATIONS.lookup(method)(raw, float(epsilon))
    return raw


def _mechanisms(raw: Mapping[str, Any]) -> list[str]:
    mechs = _get(raw, "privacy.mechanisms", []) or []
    return [mechs] if isinstance(mechs, str) else list(mechs)


def _rounds(raw: Mapping[str, Any]) -> int:
    return int(_get(raw, "rounds", 20))


def _fedkd_rate(raw: Mapping[str, Any]) -> float:
    """The client sampling rate the run's accountant amplifies by (1 unless Poisson)."""
    poisson = _get(raw, "clients.sampling", "all") == "poisson"
    return float(_get(raw, "clients.sample_rate", 1.0)) if poisson else 1.0


def _dpsgd_target(raw: dict[str, Any], epsilon: float) -> None:
    """DP-SGD calibrates σ itself: write the target ε (example level)."""
    _set(raw, "privacy.dpsgd.target_epsilon", epsilon)
    _set(raw, "privacy.dpsgd.noise_multiplier", None)


def _fedkd_gaussian(raw: dict[str, Any], epsilon: float) -> None:
    sigma = gaussian_sigma(epsilon, client_delta(raw), _rounds(raw), _fedkd_rate(raw))
    _set(raw, "privacy.gaussian.noise_multiplier", sigma)


def _fedkd_pate(raw: dict[str, Any], epsilon: float) -> None:
    threshold = _get(raw, "privacy.pate.threshold") is not None
    per_round = _get(raw, "distill.proxy_per_round", 0) or 0
    if isinstance(per_round, float):
        raise ConfigError(
            f"epsilon for pate needs a count of queries per round, and distill.proxy_per_round="
            f"{per_round:g} is a share of the proxy, whose size is not known before the data "
            "loads: set an integer"
        )
    if per_round <= 0:
        raise ConfigError("epsilon for pate needs distill.proxy_per_round > 0 (queries per round)")
    sigma = pate_sigma(
        epsilon, client_delta(raw), _rounds(raw), per_round, _fedkd_rate(raw), threshold
    )
    _set(raw, "privacy.pate.sigma", sigma)
    if threshold:
        _set(raw, "privacy.pate.sigma_threshold", sigma)


#: fedkd mechanism -> how a target ε becomes its noise setting (gaussian xor pate).
FEDKD_MECHANISMS: Registry[Callable[[dict[str, Any], float], None]] = Registry(
    "mechanism",
    {"dpsgd": _dpsgd_target, "gaussian": _fedkd_gaussian, "pate": _fedkd_pate},
    error=ConfigError,
)


def _fedkd(raw: dict[str, Any], epsilon: float) -> None:
    mechs = _mechanisms(raw)
    if not mechs:
        raise ConfigError("epsilon for fedkd needs privacy.mechanisms (dpsgd, gaussian or pate)")
    for name in FEDKD_MECHANISMS:
        if name in mechs:
            FEDKD_MECHANISMS[name](raw, epsilon)


def _dp_fedavg(raw: dict[str, Any], epsilon: float) -> None:
    n = int(_get(raw, "clients.num_clients", 10))
    sigma = dp_fedavg_sigma(epsilon, client_delta(raw), _rounds(raw), n)
    _set(raw, "privacy.gaussian.noise_multiplier", sigma)


def _non_private(method: str) -> Callable[[dict[str, Any], float], None]:
    def refuse(raw: dict[str, Any], epsilon: float) -> None:
        raise ConfigError(f"method {method} is non-private; it takes no epsilon")

    return refuse


#: Method -> how a finite target ε is written into its raw config (the method x mechanism
#: matrix: fedkd dispatches further on its mechanisms, :data:`FEDKD_MECHANISMS`).
CALIBRATIONS: Registry[Callable[[dict[str, Any], float], None]] = Registry(
    "method",
    {
        "fedkd": _fedkd,
        "central": _non_private("central"),
        "central-dpsgd": _dpsgd_target,
        "local": _non_private("local"),
        "fedavg": _non_private("fedavg"),
        "dp-fedavg": _dp_fedavg,
    },
    error=ConfigError,
)
