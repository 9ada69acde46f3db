"""``npz:PATH`` sources: a NumPy archive of ``x_train``, ``y_train``, ``x_test``, ``y_test``."""

from __future__ import annotations

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

__all__ = ["load_npz"]

_NPZ_ARRAYS: tuple[str, ...] = ("x_train", "y_train", "x_test", "y_test")


def load_npz(path: Path, spec: str) -> Source:
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
