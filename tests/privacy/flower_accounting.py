"""Flower's own client-level RDP accountant, as an independent check of fedkd's accounting.

Tests only: fedkd never reports an ε from Flower's ``RdpAccountant`` (add/remove-one);
``test_accounting`` compares it with :func:`fedkd.privacy.accounting.rdp_epsilon` on the
equivalent Gaussian releases.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


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
