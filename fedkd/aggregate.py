"""Teacher aggregation rules: pure functions ``(preds (K, N, C), weights (K,)) -> (N, C)``."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

_EPS = 1e-12


def _check(preds: np.ndarray, weights: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(preds, dtype=np.float64)
    if p.ndim != 3 or p.shape[0] < 1:
        raise ValueError(f"preds must have shape (K>=1, N, C), got {p.shape}")
    if weights is None:
        w = np.ones(p.shape[0])
    else:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (p.shape[0],) or not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ValueError(f"weights must be {p.shape[0]} finite non-negative numbers")
    return p, w


def _normalize(m: np.ndarray) -> np.ndarray:
    m = np.clip(m, 0.0, None)
    s = m.sum(axis=1, keepdims=True)
    uniform = np.full_like(m, 1.0 / m.shape[1])
    out = np.where(s > _EPS, m / np.where(s > _EPS, s, 1.0), uniform)
    return out.astype(np.float32)


def _wmean(p: np.ndarray, w: np.ndarray) -> np.ndarray:
    total = w.sum()
    if total <= 0:
        raise ValueError("weights sum to zero")
    return np.tensordot(w / total, p, axes=1)  # (N, C)


def mean_probs(preds: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Arithmetic mean of probabilities (weighted when ``weights`` is given)."""
    p, w = _check(preds, weights)
    return _normalize(_wmean(p, w))


def mean_logits(preds: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Softmax of the mean log-probability.

    Equal to the softmax of the mean logits: ``log p_k = z_k - lse(z_k)`` and the per-row
    constants cancel in the softmax.
    """
    p, w = _check(preds, weights)
    z = _wmean(np.log(np.clip(p, _EPS, None)), w)  # (N, C)
    z = z - z.max(axis=1, keepdims=True)
    return _normalize(np.exp(z))


def weighted(preds: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Mean of probabilities weighted by ``weights`` (e.g. examples per client)."""
    if weights is None:
        raise ValueError("aggregation 'weighted' needs weights (num-examples per client)")
    p, w = _check(preds, weights)
    return _normalize(_wmean(p, w))


def _sharpen(m: np.ndarray, power: float) -> np.ndarray:
    z = power * np.log(np.clip(m, _EPS, None))
    z = z - z.max(axis=1, keepdims=True)
    return _normalize(np.exp(z))


def dsfl(
    preds: np.ndarray, weights: np.ndarray | None = None, temperature: float = 0.1
) -> np.ndarray:
    """DS-FL entropy reduction (Itahara et al., 2021): ``softmax(log(mean p) / T)``, T < 1."""
    if not 0 < temperature < 1:
        raise ValueError(f"aggregation 'dsfl': temperature must be in (0, 1), got {temperature}")
    p, w = _check(preds, weights)
    return _sharpen(_wmean(p, w), 1.0 / temperature)


def power(preds: np.ndarray, weights: np.ndarray | None = None, beta: float = 2.0) -> np.ndarray:
    """Power sharpening of the mean: ``p^beta / sum p^beta``."""
    if not beta > 0:
        raise ValueError(f"aggregation 'power': beta must be > 0, got {beta}")
    p, w = _check(preds, weights)
    return _sharpen(_wmean(p, w), beta)


def confidence(preds: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Each client's row weighted by its confidence (max probability) times its weight."""
    p, w = _check(preds, weights)
    conf = p.max(axis=2) * w[:, None]  # (K, N)
    num = (conf[:, :, None] * p).sum(axis=0)  # (N, C)
    return _normalize(num / np.clip(conf.sum(axis=0)[:, None], _EPS, None))


def median(preds: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Coordinate-wise median over clients, renormalised (uniform for an all-zero row)."""
    p, _ = _check(preds, weights)
    return _normalize(np.median(p, axis=0))


def trimmed_mean(
    preds: np.ndarray, weights: np.ndarray | None = None, trim: float = 0.2
) -> np.ndarray:
    """Coordinate-wise mean after dropping ``floor(trim * K)`` values at each end."""
    if not 0 <= trim < 0.5:
        raise ValueError(f"aggregation 'trimmed_mean': trim must be in [0, 0.5), got {trim}")
    p, _ = _check(preds, weights)
    k = int(np.floor(trim * p.shape[0]))
    s = np.sort(p, axis=0)
    return _normalize(s[k : p.shape[0] - k].mean(axis=0))


def votes(preds: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Vote histogram: (N, C) counts of each client's argmax. Rows sum to K (not normalised)."""
    p, _ = _check(preds, weights)
    c = p.shape[2]
    onehot = np.eye(c, dtype=np.float32)[p.argmax(axis=2)]  # (K, N, C)
    return onehot.sum(axis=0)


AGGREGATORS: dict[str, Callable[..., np.ndarray]] = {
    "mean_probs": mean_probs,
    "mean_logits": mean_logits,
    "weighted": weighted,
    "dsfl": dsfl,
    "power": power,
    "confidence": confidence,
    "median": median,
    "trimmed_mean": trimmed_mean,
    "votes": votes,
}

_PARAMS = {"dsfl": {"temperature"}, "power": {"beta"}, "trimmed_mean": {"trim"}}


def aggregate(
    name: str, preds: np.ndarray, weights: np.ndarray | None = None, **params: float
) -> np.ndarray:
    """Apply the aggregation rule ``name``; unknown names or parameters are a ValueError."""
    if name not in AGGREGATORS:
        raise ValueError(
            f"unknown aggregation rule '{name}' (choose from {', '.join(AGGREGATORS)})"
        )
    extra = set(params) - _PARAMS.get(name, set())
    if extra:
        raise ValueError(f"aggregation '{name}' takes no parameter {', '.join(sorted(extra))}")
    return AGGREGATORS[name](preds, weights, **params)
