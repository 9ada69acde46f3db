"""Selective-FD's server-side selector: leave ambiguous teacher rows out of distillation.

Shao, Wu and Zhang, "Selective knowledge sharing for privacy-preserving federated
distillation without a good teacher", Nature Communications 15, 2024 (arXiv:2304.01731),
pair client-side selectors (which drop local predictions on inputs unlike the client's
data) with a server-side selector that drops *ambiguous* ensemble predictions: rows whose
aggregated soft label has high entropy. Only the server-side selector is here. It reads
nothing but the released teacher, so it is post-processing of what the clients (or the
privacy mechanism) already released and costs no privacy; the client-side selectors
would need a new computation on private data before release and are not implemented.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["normalized_entropy", "unambiguous"]

_EPS = 1e-12


def normalized_entropy(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy of each row divided by ``log C``: 0 for one-hot, 1 for uniform.

    Parameters
    ----------
    probs : np.ndarray
        (N, C) probabilities, C >= 2.

    Returns
    -------
    np.ndarray
        (N,) float64 values in [0, 1].
    """
    p = np.clip(np.asarray(probs, dtype=np.float64), _EPS, 1.0)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"probs must have shape (N, C>=2), got {p.shape}")
    h = -(p * np.log(p)).sum(axis=1) / math.log(p.shape[1])
    return np.clip(h, 0.0, 1.0)


def unambiguous(probs: np.ndarray, max_entropy: float) -> np.ndarray:
    """Rows a distillation keeps: normalised entropy at most ``max_entropy``.

    Parameters
    ----------
    probs : np.ndarray
        (N, C) teacher probabilities (the released, aggregated labels).
    max_entropy : float
        Threshold in (0, 1]; 1 keeps every row (the selector is off).

    Returns
    -------
    np.ndarray
        (N,) bool mask of the rows kept.
    """
    if not 0 < max_entropy <= 1:
        raise ValueError(f"distill.max_entropy must be in (0, 1], got {max_entropy}")
    if max_entropy >= 1:
        return np.ones(len(probs), dtype=bool)
    return normalized_entropy(probs) <= max_entropy
