"""Raw data sources: scikit-learn digits, MNIST-format IDX files, ``.npz`` archives.

A data source is named by a spec string:

``"digits"``
    scikit-learn's bundled 8x8 digits (offline, no test split of its own).
``"idx:DIR"``
    MNIST-format IDX files in ``DIR`` (``train-images-idx3-ubyte``,
    ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``,
    each optionally gzipped with a ``.gz`` suffix), e.g. Debian's
    ``/usr/share/datasets/fashion-mnist``.
``"npz:PATH"``
    A NumPy archive holding ``x_train``, ``y_train``, ``x_test`` and ``y_test``.
``"hub:NAME[:IMAGE_COLUMN[:LABEL_COLUMN]]"``
    A Hugging Face data set loaded through ``flwr_datasets.FederatedDataset`` (splits
    ``train`` and, if present, ``test``; image and label columns guessed unless named;
    channels-last colour images become channels-first). This is the only spec that may
    touch the network, and only because the user named it; offline it raises DataError.
``"py:PACKAGE.MODULE:CALLABLE"`` or ``"py:NAME"``
    The arrays returned by the user's own loader (see :mod:`fedkd.data.pysource`).

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

import gzip
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import datasets

__all__ = ["DataError", "Source", "load_source", "read_idx"]

logger = logging.getLogger(__name__)

_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_FILES: dict[str, str] = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
_NPZ_ARRAYS: tuple[str, ...] = ("x_train", "y_train", "x_test", "y_test")
_HUB_IMAGE_COLUMNS: tuple[str, ...] = ("image", "img", "pixel_values", "x")
_HUB_LABEL_COLUMNS: tuple[str, ...] = ("label", "labels", "fine_label", "y")


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


@lru_cache(maxsize=8)
def load_source(spec: str) -> Source:
    """Load a data source from its spec (cached per process).

    Parameters
    ----------
    spec : str
        ``"digits"``, ``"idx:DIR"``, ``"npz:PATH"``,
        ``"hub:NAME[:IMAGE_COLUMN[:LABEL_COLUMN]]"`` or ``"py:package.module:callable"``.

    Returns
    -------
    Source
        The loaded source; its arrays are shared between calls and must not be mutated.

    Raises
    ------
    DataError
        If the spec is unknown or the data is missing or malformed.
    """
    kind, _, arg = spec.partition(":")
    if kind == "digits" and not arg:
        return _load_digits(spec)
    if kind == "idx" and arg:
        return _load_idx_dir(Path(arg), spec)
    if kind == "npz" and arg:
        return _load_npz(Path(arg), spec)
    if kind == "hub" and arg:
        return _load_hub(arg, spec)
    if kind == "py" and arg:
        from fedkd.data.pysource import load_py

        return load_py(arg, spec)
    raise DataError(
        f"unknown data source '{spec}' (use digits, idx:DIR, npz:PATH, hub:NAME or "
        "py:package.module:callable)"
    )


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


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (MNIST format), gzipped or not.

    Parameters
    ----------
    path : pathlib.Path
        The file; a ``.gz`` suffix means gzip-compressed.

    Returns
    -------
    numpy.ndarray
        The array, with the dtype and dimensions stored in the header (native order).

    Raises
    ------
    DataError
        If the file cannot be read or its header or size is invalid.
    """
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: cannot read IDX file ({exc})") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    dtype = _IDX_DTYPES.get(raw[2])
    if dtype is None:
        raise DataError(f"{path}: unknown IDX data type code 0x{raw[2]:02x}")
    ndim = raw[3]
    header_size = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header_size:
        raise DataError(f"{path}: truncated IDX header")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header_size != expected:
        raise DataError(
            f"{path}: IDX payload has {len(raw) - header_size} bytes, "
            f"header {dims} implies {expected}"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header_size).reshape(dims)
    return data.astype(dtype.newbyteorder("="))


def _find_idx_file(directory: Path, stem: str) -> Path:
    """Return ``directory/stem`` or ``directory/stem.gz``, whichever exists."""
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(f"{directory / stem}: IDX file not found (also tried .gz)")


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


def _load_digits(spec: str) -> Source:
    """Load scikit-learn's 8x8 digits, scaled from [0, 16] to [0, 1]."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (np.asarray(x, dtype=np.float64) / 16.0).astype(np.float32).reshape(-1, 8, 8)
    return _make_source(x, _to_labels(np.asarray(y), spec), None, None, spec)


def _load_idx_dir(directory: Path, spec: str) -> Source:
    """Load the four MNIST-format IDX files from a directory."""
    if not directory.is_dir():
        raise DataError(f"{directory}: IDX directory not found (spec '{spec}')")
    paths = {key: _find_idx_file(directory, stem) for key, stem in _IDX_FILES.items()}
    arrays = {key: read_idx(path) for key, path in paths.items()}
    ys = {}
    for split in ("train", "test"):
        x_path, y_path = paths[f"x_{split}"], paths[f"y_{split}"]
        ys[split] = _to_labels(arrays[f"y_{split}"], str(y_path))
        _check_lengths(arrays[f"x_{split}"], ys[split], f"{x_path} / {y_path.name}")
    x_train, x_test = _scale_features([arrays["x_train"], arrays["x_test"]], str(directory))
    logger.info(
        "loaded IDX data from %s: %d train, %d test", directory, len(ys["train"]), len(ys["test"])
    )
    return _make_source(x_train, ys["train"], x_test, ys["test"], spec)


def _load_npz(path: Path, spec: str) -> Source:
    """Load x_train, y_train, x_test and y_test from a NumPy archive."""
    if not path.is_file():
        raise DataError(f"{path}: npz file not found")
    arrays = _read_npz(path)
    missing = [name for name in _NPZ_ARRAYS if name not in arrays]
    if missing:
        raise DataError(f"{path}: missing array(s) {', '.join(missing)}")
    ys = {}
    for split in ("train", "test"):
        ys[split] = _to_labels(arrays[f"y_{split}"], f"{path}: y_{split}")
        _check_lengths(arrays[f"x_{split}"], ys[split], f"{path}: x_{split}/y_{split}")
    x_train, x_test = _scale_features([arrays["x_train"], arrays["x_test"]], f"{path}: x")
    return _make_source(x_train, ys["train"], x_test, ys["test"], spec)


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """Read the arrays fedkd uses from an ``.npz`` archive (no pickled objects).

    Parameters
    ----------
    path : pathlib.Path
        The archive.

    Returns
    -------
    dict of str to numpy.ndarray
        Those of x_train, y_train, x_test, y_test present in the archive.

    Raises
    ------
    DataError
        If the file is not a readable ``.npz`` archive of plain arrays.
    """
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: cannot read npz file ({exc})") from exc
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: not an npz archive (a single array)")
    try:
        with loaded as archive:
            return {name: np.asarray(archive[name]) for name in _NPZ_ARRAYS if name in archive}
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: cannot read npz file ({exc})") from exc


def _hub_column(
    columns: list[str], requested: str | None, candidates: tuple[str, ...], what: str, spec: str
) -> str:
    """Pick the requested column, or the first known candidate present."""
    if requested:
        if requested not in columns:
            raise DataError(f"{spec}: no {what} column '{requested}' (columns: {columns})")
        return requested
    for name in candidates:
        if name in columns:
            return name
    raise DataError(f"{spec}: cannot guess the {what} column among {columns}; name it")


def _hub_split(
    dataset: datasets.Dataset, image_col: str, label_col: str, spec: str
) -> tuple[np.ndarray, np.ndarray]:
    """Convert a Hugging Face split to (features, labels) arrays."""
    table = dataset.with_format("numpy")[:]
    try:
        x = np.stack([np.asarray(item) for item in table[image_col]])
    except ValueError as exc:
        raise DataError(f"{spec}: images in column '{image_col}' differ in shape") from exc
    if x.ndim == 4 and x.shape[-1] in (1, 3, 4):
        x = np.moveaxis(x, -1, 1)
    y = _to_labels(np.asarray(table[label_col]), f"{spec}: {label_col}")
    _check_lengths(x, y, spec)
    return x, y


def _load_hub(arg: str, spec: str) -> Source:
    """Load a Hugging Face data set named explicitly by the user (network access)."""
    name, _, columns = arg.partition(":")
    image_req, _, label_req = columns.partition(":")
    try:
        from flwr_datasets import FederatedDataset

        fds = FederatedDataset(dataset=name, partitioners={"train": 1}, shuffle=False)
        train = fds.load_split("train")
    except Exception as exc:  # the hub raises assorted network/offline/lookup errors
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{spec}: cannot load hub data set '{name}' ({detail})") from exc
    try:
        test = fds.load_split("test")
    except ValueError:  # raised by FederatedDataset when the split does not exist
        logger.info("%s has no test split; one will be held out of train", spec)
        test = None
    cols = list(train.column_names)
    image_col = _hub_column(cols, image_req or None, _HUB_IMAGE_COLUMNS, "image", spec)
    label_col = _hub_column(cols, label_req or None, _HUB_LABEL_COLUMNS, "label", spec)
    x_train, y_train = _hub_split(train, image_col, label_col, spec)
    if test is None:
        (x_train,) = _scale_features([x_train], spec)
        return _make_source(x_train, y_train, None, None, spec)
    x_test, y_test = _hub_split(test, image_col, label_col, spec)
    x_train, x_test = _scale_features([x_train, x_test], spec)
    return _make_source(x_train, y_train, x_test, y_test, spec)
