"""Teacher aggregation rules: pure functions ``(preds (K, N, C), weights (K,)) -> (N, C)``.

Every rule takes ``preds``, the stacked predictions of K clients on N proxy rows over C
classes (each row a probability vector), and optional non-negative client ``weights`` of
shape (K,) (``None`` means equal weights). Every rule except ``votes`` returns float32
(N, C) probabilities whose rows sum to 1; ``votes`` returns float32 vote counts. Logs are
taken of probabilities clipped at a small epsilon, so one-hot inputs never produce NaN.

:func:`aggregate` looks a rule up by name in :data:`AGGREGATORS` and checks its parameters.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

_EPS = 1e-12
_PROB_TOL = 1e-6  # float rounding allowance above 1 for client probabilities

#: Keyword parameters each rule accepts (rules not listed take none).
RULE_PARAMS: dict[str, frozenset[str]] = {
    "dsfl": frozenset({"temperature"}),
    "power": frozenset({"beta"}),
    "trimmed_mean": frozenset({"trim"}),
}


# -- validation ------------------------------------------------------------------------------
def _check_preds(preds: np.ndarray) -> np.ndarray:
    """Validate client predictions.

    Parameters
    ----------
    preds : np.ndarray
        Array-like of shape (K, N, C) with K >= 1 and C >= 1.

    Returns
    -------
    np.ndarray
        ``preds`` as float64.

    Raises
    ------
    ValueError
        If ``preds`` is not numeric, not 3-D, has no client or no class, or holds
        NaN, infinite or values outside [0, 1].
    """
    try:
        p = np.asarray(preds, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"preds must be a numeric array: {err}") from err
    if p.ndim != 3 or p.shape[0] < 1 or p.shape[2] < 1:
        raise ValueError(f"preds must have shape (K>=1, N, C>=1), got {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError("preds must be finite (no NaN or Inf)")
    if np.any(p < 0) or np.any(p > 1 + _PROB_TOL):
        raise ValueError("preds must be probabilities in [0, 1]")
    return p


def _check_weights(weights: np.ndarray | None, num_clients: int) -> np.ndarray:
    """Validate client weights.

    Parameters
    ----------
    weights : np.ndarray or None
        Shape (K,), finite and non-negative; ``None`` means equal weights.
    num_clients : int
        K, the number of clients in ``preds``.

    Returns
    -------
    np.ndarray
        float64 weights of shape (K,), all ones for ``None``, else divided by their
        maximum (no rule depends on the scale, and sums of huge weights cannot overflow).

    Raises
    ------
    ValueError
        If the weights are not numeric, not of shape (K,), negative or not finite.
    """
    if weights is None:
        return np.ones(num_clients)
    try:
        w = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"weights must be a numeric array: {err}") from err
    if w.shape != (num_clients,):
        raise ValueError(f"weights must have shape ({num_clients},), got {w.shape}")
    if not np.all(np.isfinite(w)):
        raise ValueError("weights must be finite (no NaN or Inf)")
    if np.any(w < 0):
        raise ValueError("weights must be non-negative")
    top = w.max()
    return w / top if top > 0 else w


def _check_inputs(preds: np.ndarray, weights: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Validate ``preds`` and ``weights`` together; see the two checks above."""
    p = _check_preds(preds)
    return p, _check_weights(weights, p.shape[0])


def _float_param(rule: str, name: str, value: object) -> float:
    """Convert a rule parameter to a finite float.

    Parameters
    ----------
    rule, name : str
        Rule and parameter names, used in the error message.
    value : object
        The value given.

    Returns
    -------
    float
        The value as a float.

    Raises
    ------
    ValueError
        If the value is not a finite real number.
    """
    if isinstance(value, bool):
        raise ValueError(f"aggregation rule '{rule}': {name} must be a number, got {value!r}")
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"aggregation rule '{rule}': {name} must be a number, got {value!r}"
        ) from err
    if not math.isfinite(x):
        raise ValueError(f"aggregation rule '{rule}': {name} must be finite, got {value!r}")
    return x


# -- helpers ---------------------------------------------------------------------------------
def _normalize(m: np.ndarray) -> np.ndarray:
    """Clip (N, C) scores at 0 and divide each row by its sum.

    Parameters
    ----------
    m : np.ndarray
        Non-negative scores of shape (N, C).

    Returns
    -------
    np.ndarray
        float32 (N, C) rows summing to 1; a row with no mass becomes uniform.
    """
    m = np.clip(m, 0.0, None)
    s = m.sum(axis=1, keepdims=True)
    has_mass = s > _EPS
    uniform = np.full_like(m, 1.0 / m.shape[1])
    out = np.where(has_mass, m / np.where(has_mass, s, 1.0), uniform)
    return out.astype(np.float32)


def _weighted_mean(rule: str, values: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted mean over the client axis.

    Parameters
    ----------
    rule : str
        Rule name, used in the error message.
    values : np.ndarray
        Shape (K, N, C).
    w : np.ndarray
        Non-negative weights of shape (K,).

    Returns
    -------
    np.ndarray
        float64 (N, C) mean.

    Raises
    ------
    ValueError
        If all weights are zero.
    """
    total = w.sum()
    if not total > 0:
        raise ValueError(f"aggregation rule '{rule}': weights must not all be zero")
    return np.tensordot(w / total, values, axes=1)


def sharpen(m: np.ndarray, power: float) -> np.ndarray:
    """Return ``m**power`` row-normalized, computed in log space.

    Parameters
    ----------
    m : np.ndarray
        (N, C) probabilities.
    power : float
        Positive exponent, possibly ``inf`` (then the result is the argmax one-hot).

    Returns
    -------
    np.ndarray
        float32 (N, C) probabilities.
    """
    log_m = np.log(np.clip(m, _EPS, None))
    z = log_m - log_m.max(axis=1, keepdims=True)  # <= 0, each row's maximum is exactly 0
    scaled = np.zeros_like(z)
    below = z < 0
    with np.errstate(over="ignore"):  # a huge power sends entries to -inf: exp gives 0
        scaled[below] = z[below] * power
    return _normalize(np.exp(scaled))


# -- rules -----------------------------------------------------------------------------------
def mean_probs(preds: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Arithmetic mean of the clients' probabilities.

    Parameters
    ----------
    preds : np.ndarray
        (K, N, C) client probabilities.
    weights : np.ndarray or None, optional
        (K,) non-negative client weights; ``None`` gives the plain mean.

    Returns
    -------
    np.ndarray
        float32 (N, C) probabilities.

    Raises
    ------
    ValueError
        For malformed inputs or weights that are all zero.
    """
    p, w = _check_inputs(preds, weights)
    return _normalize(_weighted_mean("mean_probs", p, w))


def mean_logits(preds: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Softmax of the (weighted) mean log-probability.

    This equals the softmax of the mean logits: ``log p_k = z_k - lse(z_k)`` row-wise, so
    the mean of the log-probabilities differs from the mean logits by one constant per
    row, and a softmax cancels per-row constants. Probabilities are clipped at ``1e-12``
    before the log, so zero entries stay finite.

    Parameters
    ----------
    preds : np.ndarray
        (K, N, C) client probabilities.
    weights : np.ndarray or None, optional
        (K,) non-negative client weights; ``None`` means equal weights.

    Returns
    -------
    np.ndarray
        float32 (N, C) probabilities.

    Raises
    ------
    ValueError
        For malformed inputs or weights that are all zero.
    """
    p, w = _check_inputs(preds, weights)
    z = _weighted_mean("mean_logits", np.log(np.clip(p, _EPS, None)), w)
    return _normalize(np.exp(z - z.max(axis=1, keepdims=True)))


def weighted(preds: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Mean of probabilities weighted by ``weights`` (e.g. examples per client).

    Parameters
    ----------
    preds : np.ndarray
        (K, N, C) client probabilities.
    weights : np.ndarray
        (K,) non-negative client weights, required.

    Returns
    -------
    np.ndarray
        float32 (N, C) probabilities.

    Raises
    ------
    ValueError
        If ``weights`` is None or all zero, or inputs are malformed.
    """
    if weights is None:
        raise ValueError("aggregation rule 'weighted' requires weights (one per client)")
    p, w = _check_inputs(preds, weights)
    return _normalize(_weighted_mean("weighted", p, w))


def dsfl(
    preds: np.ndarray, weights: np.ndarray | None = None, temperature: float = 0.1
) -> np.ndarray:
    """DS-FL entropy reduction aggregation (Itahara et al., 2021).

    The (weighted) mean of the probabilities, sharpened as ``softmax(log(mean) / T)``.

    Parameters
    ----------
    preds : np.ndarray
        (K, N, C) client probabilities.
    weights : np.ndarray or None, optional
        (K,) non-negative client weights; ``None`` means equal weights.
    temperature : float, optional
        T in (0, 1); smaller is sharper. Default 0.1.

    Returns
    -------
    np.ndarray
        float32 (N, C) probabilities.

    Raises
    ------
    ValueError
        If ``temperature`` is not in (0, 1), or for malformed inputs.
    """
    t = _float_param("dsfl", "temperature", temperature)
    if not 0 < t < 1:
        raise ValueError(f"aggregation rule 'dsfl': temperature must be in (0, 1), got {t}")
    p, w = _check_inputs(preds, weights)
    return sharpen(_normalize(_weighted_mean("dsfl", p, w)), 1.0 / t)


def power(preds: np.ndarray, weights: np.ndarray | None = None, beta: float = 2.0) -> np.ndarray:
    """Power sharpening of the (weighted) mean: ``p**beta / sum(p**beta)``.

    Parameters
    ----------
    preds : np.ndarray
        (K, N, C) client probabilities.
    weights : np.ndarray or None, optional
        (K,) non-negative client weights; ``None`` means equal weights.
    beta : float, optional
        Exponent > 0 (> 1 sharpens, < 1 smooths). Default 2.0.

    Returns
    -------
    np.ndarray
        float32 (N, C) probabilities.

    Raises
    ------
    ValueError
        If ``beta`` is not a finite number > 0, or for malformed inputs.
    """
    b = _float_param("power", "beta", beta)
    if not b > 0:
        raise ValueError(f"aggregation rule 'power': beta must be > 0, got {b}")
    p, w = _check_inputs(preds, weights)
    return sharpen(_normalize(_weighted_mean("power", p, w)), b)


def confidence(preds: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Mean of the clients' rows, each weighted by its confidence times the client weight.

    The confidence of a client's row is its maximum probability. This is a release-only
    form of the certainty weighting of FedAUX (Sattler et al., "FedAUX: Leveraging
    Unlabeled Auxiliary Data in Federated Learning", IEEE TNNLS 2021), which scores each
    client's certainty on every public row with a separately trained, differentially
    private scoring model: that would be a new release, so here a client's own predicted
    probability is its certainty, a function of what it already sent (post-processing).

    Parameters
    ----------
    preds : np.ndarray
        (K, N, C) client probabilities.
    weights : np.ndarray or None, optional
        (K,) non-negative client weights; ``None`` means equal weights.

    Returns
    -------
    np.ndarray
        float32 (N, C) probabilities.

    Raises
    ------
    ValueError
        For malformed inputs or weights that are all zero.
    """
    p, w = _check_inputs(preds, weights)
    if not w.sum() > 0:
        raise ValueError("aggregation rule 'confidence': weights must not all be zero")
    row_w = p.max(axis=2) * w[:, None]  # (K, N)
    num = np.einsum("kn,knc->nc", row_w, p)
    return _normalize(num / np.clip(row_w.sum(axis=0), _EPS, None)[:, None])


def median(preds: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Coordinate-wise median over clients, renormalized.

    Parameters
    ----------
    preds : np.ndarray
        (K, N, C) client probabilities.
    weights : np.ndarray or None, optional
        Validated but ignored (every client counts once).

    Returns
    -------
    np.ndarray
        float32 (N, C) probabilities; a row whose medians are all 0 becomes uniform.
    """
    p, _ = _check_inputs(preds, weights)
    return _normalize(np.median(p, axis=0))


def trimmed_mean(
    preds: np.ndarray, weights: np.ndarray | None = None, trim: float = 0.2
) -> np.ndarray:
    """Coordinate-wise trimmed mean over clients, renormalized.

    Parameters
    ----------
    preds : np.ndarray
        (K, N, C) client probabilities.
    weights : np.ndarray or None, optional
        Validated but ignored (every client counts once).
    trim : float, optional
        Fraction in [0, 0.5) cut from each side: ``floor(trim * K)`` values per
        coordinate are dropped at each end. Default 0.2.

    Returns
    -------
    np.ndarray
        float32 (N, C) probabilities; a row with no mass becomes uniform.

    Raises
    ------
    ValueError
        If ``trim`` is not in [0, 0.5), or for malformed inputs.
    """
    t = _float_param("trimmed_mean", "trim", trim)
    if not 0 <= t < 0.5:
        raise ValueError(f"aggregation rule 'trimmed_mean': trim must be in [0, 0.5), got {t}")
    p, _ = _check_inputs(preds, weights)
    k = p.shape[0]
    cut = math.floor(t * k)
    return _normalize(np.sort(p, axis=0)[cut : k - cut].mean(axis=0))


def votes(preds: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Vote histogram of the clients' top-1 classes (used by PATE).

    Returns counts, not probabilities: entry (n, c) is the number of clients whose
    argmax on row n is c (ties go to the lowest class index), so rows sum to K.

    Parameters
    ----------
    preds : np.ndarray
        (K, N, C) client probabilities.
    weights : np.ndarray or None, optional
        Validated but ignored (one vote per client).

    Returns
    -------
    np.ndarray
        float32 (N, C) vote counts.
    """
    p, _ = _check_inputs(preds, weights)
    onehot = np.eye(p.shape[2], dtype=np.float32)[p.argmax(axis=2)]  # (K, N, C)
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


def aggregate(
    name: str, preds: np.ndarray, weights: np.ndarray | None = None, **params: float
) -> np.ndarray:
    """Apply the aggregation rule called ``name``.

    Parameters
    ----------
    name : str
        A key of :data:`AGGREGATORS`.
    preds : np.ndarray
        (K, N, C) client probabilities.
    weights : np.ndarray or None, optional
        (K,) non-negative client weights.
    **params : float
        The rule's parameters (see :data:`RULE_PARAMS`).

    Returns
    -------
    np.ndarray
        float32 (N, C) result of the rule.

    Raises
    ------
    ValueError
        For an unknown rule, an unexpected or invalid parameter, or malformed inputs.
    """
    if not isinstance(name, str) or name not in AGGREGATORS:
        raise ValueError(
            f"unknown aggregation rule {name!r} (choose from {', '.join(AGGREGATORS)})"
        )
    allowed = RULE_PARAMS.get(name, frozenset())
    unexpected = sorted(set(params) - allowed)
    if unexpected:
        accepts = ", ".join(sorted(allowed)) or "none"
        raise ValueError(
            f"aggregation rule '{name}' got unexpected parameter(s) {', '.join(unexpected)} "
            f"(accepts: {accepts})"
        )
    return AGGREGATORS[name](preds, weights, **params)
