"""What every data source returns, and the checks every source's arrays go through.

Features are returned as float32 scaled to ``[0, 1]`` when the raw data is integer
valued; labels as int64 in ``[0, num_classes)``. Every source is checked the same way:

* features must be finite; float features are used as given, except that non-negative
  float features with values above 1 (unscaled pixels, e.g. 0-255 stored as float) are
  refused with the factor to divide by (floats with negative values, e.g. standardised
  data, are kept);
* images stored channels-last, ``(N, H, W, C)`` with C in 1, 3 or 4, are moved to
  channels-first ``(N, C, H, W)`` (logged);
* labels must be ``0 .. C-1``, C the largest label + 1: labels that do not start at 0
  (e.g. 1..4) are refused naming the fix, a class no example has is logged as a
  warning; a ``py:`` source that declares ``num_classes`` is not checked this way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

__all__ = ["DataError", "Source"]

logger = logging.getLogger(__name__)


class DataError(ValueError):
    """A data source is missing, malformed or inconsistent.

    Messages are one line and name the offending file or spec.
    """


@dataclass(frozen=True, eq=False)
class Source:
    """A loaded data source.

    The arrays are shared by every caller of the cached :func:`load_source`: treat them
    as read-only (copy before modifying in place).

    Attributes
    ----------
    x_train : numpy.ndarray
        Training features, float32, shape ``(N, *input_shape)``.
    y_train : numpy.ndarray
        Training labels, int64, shape ``(N,)``.
    x_test : numpy.ndarray or None
        Test features, or None when the source has no test split of its own.
    y_test : numpy.ndarray or None
        Test labels, or None when the source has no test split of its own.
    num_classes : int
        Number of classes (labels lie in ``[0, num_classes)``).
    input_shape : tuple of int
        Shape of one example, e.g. ``(8, 8)`` for digits, ``(28, 28)`` for MNIST.
    name : str
        The spec the source was loaded from.
    x_proxy, y_proxy : numpy.ndarray or None
        A public proxy set of the source's own (``py:`` sources only); ``y_proxy`` only
        measures the teacher (-1 where unknown).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    num_classes: int
    input_shape: tuple[int, ...]
    name: str
    x_proxy: np.ndarray | None = None
    y_proxy: np.ndarray | None = None


def _scale_features(arrays: list[np.ndarray], what: str) -> list[np.ndarray]:
    """Convert raw feature arrays to float32, scaling integer data to ``[0, 1]``.

    uint8 data is divided by 255; other non-negative integer data by the largest value
    over all the arrays (so that train and test share one scale); boolean and
    floating-point data are kept as is. Channels-last images are moved to channels-first
    first (:func:`_channels_first`), and unscaled float pixels are refused
    (:func:`_check_float_range`).

    Parameters
    ----------
    arrays : list of numpy.ndarray
        Raw features of the splits of one source (same dtype expected).
    what : str
        Name of the file or array, used in error messages.

    Returns
    -------
    list of numpy.ndarray
        float32 features, in the order and shapes given.

    Raises
    ------
    DataError
        If the features are not numeric, are negative integers, are not finite, or are
        non-negative floats above 1.
    """
    arrays = _channels_first(arrays, what)
    _check_float_range(arrays, what)
    scaled = []
    peak = _integer_peak(arrays, what)
    for x in arrays:
        if x.dtype == np.uint8:
            scaled.append((x / np.float32(255.0)).astype(np.float32))
        elif np.issubdtype(x.dtype, np.integer):
            scaled.append((x.astype(np.float64) / peak).astype(np.float32))
        elif np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.bool_):
            scaled.append(x.astype(np.float32))
        else:
            raise DataError(f"{what}: features must be numeric, got dtype {x.dtype}")
    return scaled


def _channels_first(arrays: list[np.ndarray], what: str) -> list[np.ndarray]:
    """Move channels-last images ``(N, H, W, C)``, C in 1, 3 or 4, to ``(N, C, H, W)``.

    The first array decides (the others are of the same source); arrays already
    channels-first (their axis 1 is 1, 3 or 4) and non-image arrays are left alone.
    """
    first = arrays[0]
    if first.ndim != 4 or first.shape[-1] not in (1, 3, 4) or first.shape[1] in (1, 3, 4):
        return arrays
    moved = [np.ascontiguousarray(np.moveaxis(x, -1, 1)) if x.ndim == 4 else x for x in arrays]
    logger.info(
        "%s: images of shape %s are channels-last; moved to channels-first %s",
        what,
        tuple(first.shape[1:]),
        tuple(moved[0].shape[1:]),
    )
    return moved


def _check_float_range(arrays: list[np.ndarray], what: str) -> None:
    """Refuse non-finite features, and non-negative float features above 1."""
    floats = [x for x in arrays if np.issubdtype(x.dtype, np.floating) and x.size]
    for x in floats:
        if not np.all(np.isfinite(x)):
            raise DataError(f"{what}: features contain NaN or infinite values")
    if not floats:
        return
    low = min(float(x.min()) for x in floats)
    high = max(float(x.max()) for x in floats)
    if low >= 0 and high > 1 + 1e-6:
        factor = "255" if 128 < high <= 255 else f"their maximum, {high:g}"  # 8-bit pixels?
        raise DataError(
            f"{what}: float features range over [{low:g}, {high:g}]; fedkd expects float "
            f"features in [0, 1]: divide them by {factor} (or pass integer pixels, which "
            "are scaled automatically)"
        )


def _integer_peak(arrays: list[np.ndarray], what: str) -> float:
    """Largest value over the integer arrays (1.0 if none is positive)."""
    ints = [x for x in arrays if np.issubdtype(x.dtype, np.integer) and x.size]
    if any(x.min() < 0 for x in ints):
        raise DataError(f"{what}: integer features must be non-negative")
    peak = max((float(x.max()) for x in ints), default=0.0)
    return peak if peak > 0 else 1.0


def _to_labels(y: np.ndarray, what: str) -> np.ndarray:
    """Validate labels and convert them to int64.

    Parameters
    ----------
    y : numpy.ndarray
        Raw labels; a 1-D array of non-negative integers (integral floats accepted).
    what : str
        Name of the file or array, used in error messages.

    Returns
    -------
    numpy.ndarray
        int64 labels.

    Raises
    ------
    DataError
        If the labels are not 1-D, not integers or negative.
    """
    if y.ndim != 1:
        raise DataError(f"{what}: labels must be 1-D, got shape {y.shape}")
    if np.issubdtype(y.dtype, np.floating):
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise DataError(f"{what}: labels must be integers")
    elif not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{what}: labels must be integers, got dtype {y.dtype}")
    if y.size and y.min() < 0:
        raise DataError(f"{what}: labels must be non-negative, got {y.min()}")
    return y.astype(np.int64)


def _num_classes(labels: list[np.ndarray], what: str, *, every_class: bool = True) -> int:
    """Number of classes implied by the largest label (at least one label needed).

    With ``every_class``, labels that do not start at 0 (e.g. 1..4) are refused: class 0
    would have no example; a class skipped in between is logged as a warning.
    """
    present = [y for y in labels if y.size]
    if not present:
        raise DataError(f"{what}: no labelled examples")
    count = int(max(int(y.max()) for y in present)) + 1
    if not every_class:
        return count
    seen = np.unique(np.concatenate(present))
    first, last = int(seen[0]), int(seen[-1])
    hint = "(a py: source may instead declare num_classes to keep empty classes)"
    if first > 0 and len(seen) == last - first + 1:
        raise DataError(
            f"{what}: labels run {first}..{last}, fedkd expects 0..C-1: subtract {first} from "
            f"them {hint}"
        )
    if first > 0:
        raise DataError(
            f"{what}: the smallest label is {first}, fedkd expects 0..C-1: remap the labels "
            f"to 0..{len(seen) - 1} {hint}"
        )
    if len(seen) < count:
        missing = sorted(set(range(count)) - {int(v) for v in seen})
        shown = ", ".join(str(m) for m in missing[:5]) + (", ..." if len(missing) > 5 else "")
        logger.warning(
            "%s: no example has label(s) %s; %d classes, those stay empty", what, shown, count
        )
    return count


def _check_lengths(x: np.ndarray, y: np.ndarray, what: str) -> None:
    """Raise DataError unless x is ``(N, ...)`` with N equal to the number of labels."""
    if x.ndim < 2:
        raise DataError(f"{what}: features must have shape (N, ...), got {x.shape}")
    if x.shape[0] != y.shape[0]:
        raise DataError(f"{what}: {x.shape[0]} feature rows but {y.shape[0]} labels")


def _make_source(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray | None,
    y_test: np.ndarray | None,
    name: str,
    *,
    every_class: bool = True,
) -> Source:
    """Assemble a Source from validated arrays, checking shapes and labels agree."""
    input_shape = tuple(int(d) for d in x_train.shape[1:])
    if x_test is not None and tuple(x_test.shape[1:]) != input_shape:
        raise DataError(f"{name}: test examples have shape {x_test.shape[1:]}, train {input_shape}")
    labels = [y_train] if y_test is None else [y_train, y_test]
    return Source(
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        num_classes=_num_classes(labels, name, every_class=every_class),
        input_shape=input_shape,
        name=name,
    )
