"""Client-level central Gaussian mechanism on prediction matrices (trusted server).

Each replying client's prediction matrix (N proxy samples x C classes) is clipped to
Frobenius (whole-matrix L2) norm S; the server adds N(0, σ²S²) independently to every
coordinate of the *sum* of the clipped matrices. Adding or removing one client moves the sum
by at most S in L2, so one release is a Gaussian mechanism with noise multiplier σ; with
Poisson client sampling at rate q over R rounds it is accounted as R compositions of the
Poisson-subsampled Gaussian. The number of clients is published, so the release is
accounted under replace-one-client: a replacement moves the sum by up to 2S, which the
accountant's replace-one convention covers (see :mod:`fedkd.privacy.accounting`).

Dividing the noisy sum by anything, clipping negatives and renormalising rows are
post-processing and cost no privacy. :func:`gaussian_aggregate` divides by K = the number of
replies actually received; the projection back to probability rows is scale invariant, so
its output is the same as for the undivided noisy sum (K leaks nothing beyond the noisy
sum).

A Poisson round in which nobody replied must still release (pure noise) and be recorded.

Randomness: pass a :class:`numpy.random.Generator`; :func:`secure_rng` seeds one from
``os.urandom``. NumPy's PCG64 is not a cryptographic generator and floating-point Gaussian
sampling is not hardened against the attacks of Mironov 2012; this is a documented
limitation, as is Opacus' unavailable ``secure_mode`` on torch 2.x.
"""

from __future__ import annotations

import numpy as np

from fedkd.privacy.ledger import SERVER_SUBJECT, Release

_CLIP_SLACK = 1e-9  # relative tolerance for float round-off when checking clipped norms


def secure_rng() -> np.random.Generator:
    """A NumPy Generator seeded with 256 bits from ``os.urandom`` (not a CSPRNG stream)."""
    from fedkd.privacy.entropy import numpy_rng

    return numpy_rng()


def clip_matrix(m: np.ndarray, clip_norm: float) -> np.ndarray:
    """Scale a matrix down so its whole-matrix L2 (Frobenius) norm is at most ``clip_norm``.

    Parameters
    ----------
    m : np.ndarray
        Any-shaped array (normally one client's (N, C) prediction matrix).
    clip_norm : float
        S > 0.

    Returns
    -------
    np.ndarray
        ``m * min(1, S / ||m||)`` as float64 (a new array; ``m`` is not modified).
    """
    if not clip_norm > 0:
        raise ValueError(f"clip_norm must be > 0, got {clip_norm!r}")
    arr = np.asarray(m, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError("cannot clip a matrix with non-finite entries")
    norm = float(np.linalg.norm(arr.ravel()))
    if norm <= clip_norm:
        return arr.copy()
    return arr * (clip_norm / norm)


def noisy_sum(
    clipped: np.ndarray, clip_norm: float, noise_multiplier: float, rng: np.random.Generator
) -> np.ndarray:
    """Sum of already-clipped matrices plus N(0, (σS)²) on every coordinate.

    Parameters
    ----------
    clipped : np.ndarray
        (K, N, C) stack of matrices, each with Frobenius norm <= S (K may be 0).
    clip_norm : float
        S, the L2 sensitivity of the sum under add/remove-one-client.
    noise_multiplier : float
        σ > 0.
    rng : np.random.Generator
        Source of the noise.

    Returns
    -------
    np.ndarray
        (N, C) raw noisy sum (no projection).

    Raises
    ------
    ValueError
        If a matrix exceeds the clipping norm (the sensitivity would not hold).
    """
    arr = np.asarray(clipped, dtype=np.float64)
    if arr.ndim != 3:
        raise ValueError(f"clipped must be (K, N, C), got shape {arr.shape}")
    if not clip_norm > 0:
        raise ValueError(f"clip_norm must be > 0, got {clip_norm!r}")
    if not noise_multiplier > 0:
        raise ValueError(f"noise_multiplier must be > 0, got {noise_multiplier!r}")
    if arr.shape[0]:
        norms = np.linalg.norm(arr.reshape(arr.shape[0], -1), axis=1)
        if np.any(norms > clip_norm * (1 + _CLIP_SLACK)):
            raise ValueError(
                f"matrix norms up to {norms.max():.6g} exceed clip_norm={clip_norm}: clip first"
            )
    total = arr.sum(axis=0)
    return total + rng.normal(0.0, noise_multiplier * clip_norm, size=total.shape)


def project_rows_to_simplex(m: np.ndarray) -> np.ndarray:
    """Clip negatives to 0 and renormalise each row to sum 1 (uniform if a row is all 0).

    Scale invariant: ``project_rows_to_simplex(c * m) == project_rows_to_simplex(m)``, c > 0.
    """
    arr = np.clip(np.asarray(m, dtype=np.float64), 0.0, None)
    if arr.ndim != 2:
        raise ValueError(f"expected an (N, C) matrix, got shape {arr.shape}")
    sums = arr.sum(axis=1, keepdims=True)
    uniform = np.full_like(arr, 1.0 / arr.shape[1])
    safe = np.where(sums > 0, sums, 1.0)
    return np.where(sums > 0, arr / safe, uniform)


def gaussian_aggregate(
    preds: np.ndarray, clip_norm: float, noise_multiplier: float, rng: np.random.Generator
) -> np.ndarray:
    """Noisy mean of the clients' prediction matrices, as probability rows.

    Parameters
    ----------
    preds : np.ndarray
        (K, N, C) prediction matrices of the K clients that replied this round.
    clip_norm : float
        S: each matrix is clipped to Frobenius norm S.
    noise_multiplier : float
        σ: the sum gets N(0, σ²S²) per coordinate.
    rng : np.random.Generator
        Noise source (see :func:`secure_rng`).

    Returns
    -------
    np.ndarray
        (N, C) rows on the probability simplex: ``(noisy sum) / max(K, 1)`` with negatives
        clipped to 0 and rows renormalised (uniform if all zero). Everything after the noisy
        sum is post-processing.
    """
    arr = np.asarray(preds, dtype=np.float64)
    if arr.ndim != 3:
        raise ValueError(f"preds must be (K, N, C), got shape {arr.shape}")
    clipped = np.stack([clip_matrix(p, clip_norm) for p in arr]) if arr.shape[0] else arr
    total = noisy_sum(clipped, clip_norm, noise_multiplier, rng)
    return project_rows_to_simplex(total / max(arr.shape[0], 1))


def release_for_round(
    round: int, noise_multiplier: float, sample_rate: float, population: int, seeded: bool = False
) -> Release:
    """The ledger entry of one round of the central Gaussian mechanism.

    Parameters
    ----------
    round : int
        Server round.
    noise_multiplier : float
        σ used by :func:`noisy_sum`.
    sample_rate : float
        Poisson client-sampling rate q (1.0 when every client is asked).
    population : int
        Number of clients n.
    seeded : bool
        Noise derived from ``seed`` (``privacy.insecure_seeded_noise``): not a guarantee.
    """
    return Release(
        mechanism="gaussian",
        scope="client",
        subject=SERVER_SUBJECT,
        round=round,
        noise_multiplier=float(noise_multiplier),
        sample_rate=float(sample_rate),
        steps=1,
        population=population,
        relation="replace_one",
        seeded=seeded,
    )
