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

Each kind lives in its own module (:mod:`fedkd.data.idx`, :mod:`fedkd.data.npz`,
:mod:`fedkd.data.hub`, :mod:`fedkd.data.pysource`); every one returns a
:class:`~fedkd.data.arrays.Source` checked as :mod:`fedkd.data.arrays` describes.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np

from fedkd.data.arrays import DataError, Source, _make_source, _to_labels
from fedkd.data.hub import load_hub
from fedkd.data.idx import load_idx_dir, read_idx
from fedkd.data.npz import load_npz
from fedkd.data.pysource import load_py

__all__ = ["KINDS", "DataError", "Source", "load_source", "read_idx"]


def _load_digits(arg: str, spec: str) -> Source:
    """Load scikit-learn's 8x8 digits, scaled from [0, 16] to [0, 1]."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (np.asarray(x, dtype=np.float64) / 16.0).astype(np.float32).reshape(-1, 8, 8)
    return _make_source(x, _to_labels(np.asarray(y), spec), None, None, spec)


#: Source kinds: the part of a spec before the first ``:`` -> loader ``(arg, spec)``.
#: Every kind but ``digits`` needs a non-empty ``arg``.
KINDS: dict[str, Callable[[str, str], Source]] = {
    "digits": _load_digits,
    "idx": lambda arg, spec: load_idx_dir(Path(arg), spec),
    "npz": lambda arg, spec: load_npz(Path(arg), spec),
    "hub": load_hub,
    "py": load_py,
}


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
    if kind in KINDS and (bool(arg) != (kind == "digits")):
        return KINDS[kind](arg, spec)
    raise DataError(
        f"unknown data source '{spec}' (use digits, idx:DIR, npz:PATH, hub:NAME or "
        "py:package.module:callable)"
    )
