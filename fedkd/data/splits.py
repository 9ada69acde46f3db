"""Private / proxy / test splits of a data source for federated distillation.

The private pool is what the clients partition among themselves; the proxy set is public
*unlabeled* data on which clients share predictions; the test set measures the final
models. An optional validation set, carved out of the private pool, is what settings are
chosen on (never the test set); no client trains on it. ``y_proxy`` exists only so that
the server can measure teacher accuracy on the proxy set: it must never be used for
training.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from fedkd.data.arrays import DataError, Source
from fedkd.data.sources import load_source

__all__ = ["Splits", "build_splits"]

logger = logging.getLogger(__name__)

_PROXY_STREAM = 1
_PROXY_CAP_STREAM = 2
_VALIDATION_STREAM = 3


@dataclass(frozen=True, eq=False)
class Splits:
    """Disjoint data splits for one experiment.

    The arrays are shared by every caller of the cached :func:`build_splits`: treat them
    as read-only (copy before modifying in place).

    Attributes
    ----------
    x_private : numpy.ndarray
        Clients' private training pool, float32, shape ``(N, *input_shape)``.
    y_private : numpy.ndarray
        Labels of the private pool, int64.
    x_proxy : numpy.ndarray
        Public unlabeled proxy (transfer) set.
    y_proxy : numpy.ndarray
        Proxy labels, ONLY for measuring teacher accuracy on the server (in the proxy
        source's label space when the proxy comes from another source).
    x_test : numpy.ndarray
        Held-out test features.
    y_test : numpy.ndarray
        Test labels.
    x_val : numpy.ndarray
        Validation features, held out of the private pool (no client trains on them);
        empty (``(0, *input_shape)``) without a validation split.
    y_val : numpy.ndarray
        Validation labels (empty without a validation split).
    num_classes : int
        Number of classes of the (private) source.
    input_shape : tuple of int
        Shape of one example.
    """

    x_private: np.ndarray
    y_private: np.ndarray
    x_proxy: np.ndarray
    y_proxy: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    input_shape: tuple[int, ...]
    x_val: np.ndarray
    y_val: np.ndarray


@lru_cache(maxsize=8)
def build_splits(
    source: str,
    *,
    seed: int,
    test_fraction: float = 0.2,
    proxy_fraction: float = 0.2,
    proxy_source: str | None = None,
    proxy_size: int | None = None,
    validation_fraction: float = 0.0,
) -> Splits:
    """Build private, proxy and test splits of a data source (cached per arguments).

    Parameters
    ----------
    source : str
        Spec of the private data source (see :func:`fedkd.data.sources.load_source`).
    seed : int
        Seed of every split and subsample (the test split uses it as scikit-learn's
        ``random_state``; the proxy split and cap use seeds derived from it).
    test_fraction : float, optional
        Fraction of the training data held out (stratified) as the test set, used only
        when the source has no test split of its own; in ``(0, 1)``.
    proxy_fraction : float, optional
        Fraction of the remaining training data held out (stratified) as the proxy set,
        used only when ``proxy_source`` is None and the source has no proxy set of its own
        (a ``py:`` source may bring one); in ``(0, 1)``.
    proxy_source : str, optional
        Spec of another source whose training examples form the proxy set; the private
        pool is then all remaining training data. Example shapes must match.
    proxy_size : int, optional
        Cap on the proxy set size (seeded subsample without replacement). Examples left
        out of the proxy are not returned to the private pool, so the private pool does
        not depend on ``proxy_size``.
    validation_fraction : float, optional
        Fraction of the private pool held out (stratified, its own seed stream) as the
        validation set, after the proxy split; in ``[0, 1)``. ``0`` (the default) holds
        nothing out and leaves every other split exactly as without it.

    Returns
    -------
    Splits
        Disjoint private, proxy, test and validation sets.

    Raises
    ------
    ValueError
        If a fraction or ``proxy_size`` is out of range (the message names the key).
    DataError
        If a source cannot be loaded, the shapes of the two sources differ, or a
        stratified split is impossible.
    """
    _check_fraction("data.test_fraction", test_fraction)
    _check_fraction("data.proxy_fraction", proxy_fraction)
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"data.validation_fraction must be in [0, 1), got {validation_fraction}")
    if proxy_size is not None and (isinstance(proxy_size, bool) or proxy_size < 1):
        raise ValueError(f"data.proxy_size must be a positive integer, got {proxy_size!r}")
    if proxy_source is not None and proxy_source == source:
        raise DataError(
            f"data.proxy_source '{proxy_source}' is the private source; leave it unset to "
            "hold out a proxy split"
        )
    src = load_source(source)
    if src.x_test is not None and src.y_test is not None:
        x_pool, y_pool, x_test, y_test = src.x_train, src.y_train, src.x_test, src.y_test
    else:
        x_pool, x_test, y_pool, y_test = _stratified_split(
            src.x_train, src.y_train, test_fraction, seed, source
        )
    x_private, y_private, x_proxy, y_proxy = _proxy_split(
        src, x_pool, y_pool, source, proxy_source, proxy_fraction, seed
    )
    if proxy_size is not None:
        x_proxy, y_proxy = _cap(x_proxy, y_proxy, proxy_size, _child_seed(seed, _PROXY_CAP_STREAM))
    if validation_fraction > 0:
        x_private, x_val, y_private, y_val = _stratified_split(
            x_private, y_private, validation_fraction, _child_seed(seed, _VALIDATION_STREAM), source
        )
    else:
        x_val, y_val = x_private[:0], y_private[:0]
    logger.info(
        "splits of %s: %d private, %d proxy, %d test, %d validation",
        source,
        len(y_private),
        len(y_proxy),
        len(y_test),
        len(y_val),
    )
    return Splits(
        x_private=x_private,
        y_private=y_private,
        x_proxy=x_proxy,
        y_proxy=y_proxy,
        x_test=x_test,
        y_test=y_test,
        num_classes=src.num_classes,
        input_shape=src.input_shape,
        x_val=x_val,
        y_val=y_val,
    )


def _proxy_split(
    src: Source,
    x_pool: np.ndarray,
    y_pool: np.ndarray,
    source: str,
    proxy_source: str | None,
    proxy_fraction: float,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_private, y_private, x_proxy, y_proxy)``: the pool split into private and proxy.

    The proxy is the source's own proxy set, a stratified ``proxy_fraction`` of the pool,
    or the training examples of ``proxy_source`` (then the whole pool stays private).
    """
    if proxy_source is None and src.x_proxy is not None:  # the source's own proxy set
        return x_pool, y_pool, src.x_proxy, src.y_proxy
    if proxy_source is None:
        x_private, x_proxy, y_private, y_proxy = _stratified_split(
            x_pool, y_pool, proxy_fraction, _child_seed(seed, _PROXY_STREAM), source
        )
        return x_private, y_private, x_proxy, y_proxy
    proxy = load_source(proxy_source)
    if proxy.input_shape != src.input_shape:
        raise DataError(
            f"proxy source '{proxy_source}' has example shape {proxy.input_shape}, "
            f"source '{source}' has {src.input_shape}"
        )
    return x_pool, y_pool, proxy.x_train, proxy.y_train


def _check_fraction(key: str, value: float) -> None:
    """Raise ValueError naming ``key`` unless ``0 < value < 1``."""
    if not 0.0 < value < 1.0:
        raise ValueError(f"{key} must be in (0, 1), got {value}")


def _child_seed(seed: int, stream: int) -> int:
    """Derive an independent 32-bit seed for one random stream from the run seed.

    Parameters
    ----------
    seed : int
        Run seed (non-negative).
    stream : int
        Index of the stream (proxy split, proxy cap); the test split uses ``seed``.

    Returns
    -------
    int
        A seed usable as scikit-learn's ``random_state``.
    """
    return int(np.random.SeedSequence([seed, stream]).generate_state(1)[0])


def _stratified_split(
    x: np.ndarray, y: np.ndarray, fraction: float, seed: int, source: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Stratified split; returns ``(x_keep, x_held, y_keep, y_held)``.

    Parameters
    ----------
    x, y : numpy.ndarray
        Features and labels.
    fraction : float
        Fraction held out.
    seed : int
        scikit-learn ``random_state``.
    source : str
        Source spec, for error messages.

    Returns
    -------
    tuple of numpy.ndarray
        Kept features, held-out features, kept labels, held-out labels.

    Raises
    ------
    DataError
        If the data is too small or a class too rare to stratify.
    """
    from sklearn.model_selection import train_test_split

    try:
        x_keep, x_held, y_keep, y_held = train_test_split(
            x, y, test_size=fraction, random_state=seed, stratify=y
        )
    except ValueError as exc:
        raise DataError(f"cannot make a stratified split of '{source}' ({exc})") from exc
    return x_keep, x_held, y_keep, y_held


def _cap(x: np.ndarray, y: np.ndarray, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep at most ``size`` examples, a seeded subsample in original order.

    Parameters
    ----------
    x, y : numpy.ndarray
        Features and labels.
    size : int
        Maximum number of examples kept.
    seed : int
        Seed of the subsample.

    Returns
    -------
    tuple of numpy.ndarray
        The (possibly) reduced features and labels.
    """
    if len(y) <= size:
        return x, y
    keep = np.sort(np.random.default_rng(seed).choice(len(y), size=size, replace=False))
    return x[keep], y[keep]
