"""``idx:DIR`` sources: MNIST-format IDX files (optionally gzipped) in a directory."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import numpy as np

from fedkd.data.arrays import (
    DataError,
    Source,
    _check_lengths,
    _make_source,
    _scale_features,
    _to_labels,
)

__all__ = ["load_idx_dir", "read_idx"]

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


def load_idx_dir(directory: Path, spec: str) -> Source:
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
