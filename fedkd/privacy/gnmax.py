"""PATE aggregators on vote histograms: GNMax and Confident-GNMax.

From Papernot et al. 2018, "Scalable Private Learning with PATE" (ICLR 2018). Each client
(teacher) sends a one-hot vote per proxy query; the server holds an (N, C) histogram of
counts. Replacing one teacher moves one vote from one class to another, so the histogram has
L2 sensitivity √2 per query (1 for the max count used by the threshold check). All queries
of a round share one client sample, so a round is accounted as ONE Gaussian mechanism on
the concatenated statistics (:mod:`fedkd.privacy.accounting`); record each round with
:func:`release_for_round`. Confident-GNMax is charged GNMax noise on every checked query.
"""

from __future__ import annotations

import numpy as np

from fedkd.privacy.ledger import SERVER_SUBJECT, Release


def _votes(votes: np.ndarray) -> np.ndarray:
    arr = np.asarray(votes, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] < 1:
        raise ValueError(f"votes must be an (N, C) histogram, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError("votes must be finite, non-negative counts")
    return arr


def _positive(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and value > 0 and np.isfinite(value)):
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")


def gnmax(votes: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """GNMax: ``argmax_j (n_j + N(0, σ²))`` for each query.

    Parameters
    ----------
    votes : np.ndarray
        (N, C) vote counts.
    sigma : float
        σ (σ2 in Confident-GNMax), > 0.
    rng : np.random.Generator
        Noise source.

    Returns
    -------
    np.ndarray
        (N,) int64 labels.
    """
    arr = _votes(votes)
    _positive("sigma", sigma)
    noisy = arr + rng.normal(0.0, sigma, size=arr.shape)
    return np.argmax(noisy, axis=1).astype(np.int64)


def confident_gnmax(
    votes: np.ndarray,
    threshold: float,
    sigma1: float,
    sigma2: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Confident-GNMax: answer a query only if its noisy max count reaches the threshold.

    A query is answered iff ``max_j n_j + N(0, σ1²) >= T``; answered queries are then
    labelled by :func:`gnmax` with σ2 (fresh noise).

    Parameters
    ----------
    votes : np.ndarray
        (N, C) vote counts.
    threshold : float
        T.
    sigma1 : float
        Noise of the threshold check, > 0.
    sigma2 : float
        Noise of the GNMax answer, > 0.
    rng : np.random.Generator
        Noise source.

    Returns
    -------
    labels : np.ndarray
        (N,) int64, -1 where the query was not answered.
    answered : np.ndarray
        (N,) bool mask of answered queries.
    """
    arr = _votes(votes)
    _positive("sigma1", sigma1)
    _positive("sigma2", sigma2)
    noisy_max = arr.max(axis=1) + rng.normal(0.0, sigma1, size=arr.shape[0])
    answered = noisy_max >= threshold
    labels = np.full(arr.shape[0], -1, dtype=np.int64)
    if answered.any():
        labels[answered] = gnmax(arr[answered], sigma2, rng)
    return labels, answered


def release_for_round(
    round: int,
    sigma2: float,
    answered: int,
    population: int,
    *,
    sigma1: float | None = None,
    checked: int = 0,
    sample_rate: float = 1.0,
    seeded: bool = False,
) -> Release:
    """The ledger entry of one PATE round.

    Parameters
    ----------
    round : int
        Server round.
    sigma2 : float
        GNMax noise σ2 on the vote counts.
    answered : int
        Queries answered by GNMax (all queries for plain GNMax).
    population : int
        Number of clients (teachers).
    sigma1 : float, optional
        Threshold-check noise (Confident-GNMax).
    checked : int
        Queries that went through the threshold check (Confident-GNMax).
    sample_rate : float
        Poisson client-sampling rate (1.0: every client votes).
    seeded : bool
        Noise derived from ``seed`` (``privacy.insecure_seeded_noise``): not a guarantee.
    """
    return Release(
        mechanism="pate",
        scope="client",
        subject=SERVER_SUBJECT,
        round=round,
        noise_multiplier=float(sigma2),
        sample_rate=float(sample_rate),
        steps=int(answered),
        sigma_threshold=None if sigma1 is None else float(sigma1),
        threshold_checks=int(checked),
        population=population,
        relation="replace_one",
        seeded=seeded,
    )
