"""A device's own data in deployment: the SuperNode's node config names it.

Node config keys (``flower-supernode --node-config "..."``):

``data-path``
    The device's private training data: a directory of MNIST-format IDX files
    (``train-images-idx3-ubyte`` and ``train-labels-idx1-ubyte``, optionally ``.gz``) or
    an ``.npz`` archive with ``x_train`` and ``y_train``. Store features as in the run's
    data source (uint8 images, or floats already in ``[0, 1]``): uint8 is divided by 255,
    other integers by their largest value, floats are used as they are.
``proxy-source`` (optional)
    Where this device finds the public data the run's proxy set comes from, as a data
    spec (``digits``, ``idx:DIR``, ``npz:PATH``). When the run config has a
    ``data.proxy_source``, this is the device's local copy of it; otherwise it stands for
    the run's ``data.source``, from which the server holds the proxy split out. Without
    it, the device rebuilds the proxy from the run config itself (fine for ``digits``,
    which ships with scikit-learn). Either way the proxy rows must be the server's, in
    the server's order: the server sends row indices, never examples.

Every problem raises :class:`fedkd.data.DataError` naming the path and what is wrong; the
ClientApp turns it into an error reply ``node N: ...`` and the round goes on without it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from fedkd.clientdata import ClientData, splits_for
from fedkd.config import Config
from fedkd.data.arrays import DataError, _check_lengths, _scale_features, _to_labels
from fedkd.data.idx import _IDX_FILES, _find_idx_file, read_idx
from fedkd.data.npz import _read_npz
from fedkd.data.sources import load_source
from fedkd.data.splits import _PROXY_CAP_STREAM, _cap, _child_seed, build_splits
from fedkd.protocol import NODE_DATA_PATH

__all__ = ["DATA_PATH", "PROXY_SOURCE", "device_data", "read_device_data"]

logger = logging.getLogger(__name__)

DATA_PATH = NODE_DATA_PATH
PROXY_SOURCE = "proxy-source"


@lru_cache(maxsize=4)
def read_device_data(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Read a device's private examples from an IDX directory or an ``.npz`` archive.

    Parameters
    ----------
    path : str
        The ``data-path`` of the node config.

    Returns
    -------
    tuple of numpy.ndarray
        float32 features ``(N, *shape)`` and int64 labels ``(N,)``; cached per process,
        treat as read-only.

    Raises
    ------
    DataError
        If the path is missing, of an unknown kind, or its content is malformed.
    """
    p = Path(path).expanduser()
    if not str(path).strip():
        raise DataError("data-path is empty")
    if p.is_dir():
        x_path = _find_idx_file(p, _IDX_FILES["x_train"])
        y_path = _find_idx_file(p, _IDX_FILES["y_train"])
        x_raw, y_raw = read_idx(x_path), read_idx(y_path)
        y = _to_labels(y_raw, str(y_path))
        _check_lengths(x_raw, y, f"{x_path} / {y_path.name}")
        what = str(p)
    elif p.is_file():
        if p.suffix != ".npz":
            raise DataError(f"{p}: data-path must be an IDX directory or an .npz file")
        arrays = _read_npz(p)
        missing = [k for k in ("x_train", "y_train") if k not in arrays]
        if missing:
            raise DataError(f"{p}: missing array(s) {', '.join(missing)}")
        x_raw = arrays["x_train"]
        y = _to_labels(arrays["y_train"], f"{p}: y_train")
        _check_lengths(x_raw, y, f"{p}: x_train/y_train")
        what = f"{p}: x_train"
    else:
        raise DataError(f"{p}: data-path not found")
    if len(y) == 0:
        raise DataError(f"{p}: no training examples")
    (x,) = _scale_features([x_raw], what)
    if not np.all(np.isfinite(x)):
        raise DataError(f"{p}: features contain NaN or infinity")
    logger.info("device data %s: %d examples of shape %s", p, len(y), tuple(x.shape[1:]))
    return x, y


def _public(cfg: Config, spec: str | None) -> tuple[np.ndarray, int]:
    """The run's public proxy inputs, in the server's order, and its number of classes."""
    d = cfg.data
    try:
        if spec is None:
            splits = splits_for(d, cfg.seed)
            return splits.x_proxy, int(splits.num_classes)
        if d.proxy_source is None:
            splits = build_splits(
                spec,
                seed=cfg.seed,
                test_fraction=d.test_fraction,
                proxy_fraction=d.proxy_fraction,
                proxy_size=d.proxy_size,
            )
            return splits.x_proxy, int(splits.num_classes)
        proxy = load_source(spec)
        x = proxy.x_train
        if d.proxy_size is not None:
            x, _ = _cap(x, proxy.y_train, d.proxy_size, _child_seed(cfg.seed, _PROXY_CAP_STREAM))
    except DataError as err:
        where = f"proxy-source {spec}" if spec else "the run's public data"
        raise DataError(f"{where}: {err}") from err
    try:  # the private source fixes the classes; a device may not have it
        num_classes = int(splits_for(d, cfg.seed).num_classes)
    except DataError:
        num_classes = int(proxy.num_classes)
        logger.warning(
            "run source %s not readable here; %d classes from %s", d.source, num_classes, spec
        )
    return x, num_classes


def device_data(cfg: Config, node_config: Mapping[str, Any]) -> ClientData:
    """The client's data on a device: its own files plus the run's public proxy inputs.

    Parameters
    ----------
    cfg : Config
        The run configuration sent by the server.
    node_config : mapping
        The SuperNode's node config (``data-path``, optional ``proxy-source``).

    Returns
    -------
    ClientData
        Private examples from ``data-path``; the proxy inputs; the run's example shape
        and number of classes.

    Raises
    ------
    DataError
        If ``data-path`` is missing or malformed, or does not fit the run (example shape,
        label range).
    """
    if DATA_PATH not in node_config:
        raise DataError("node config has no data-path")
    path = str(node_config[DATA_PATH])
    x, y = read_device_data(path)
    spec = node_config.get(PROXY_SOURCE)
    x_proxy, num_classes = _public(cfg, str(spec) if spec else None)
    input_shape = tuple(int(s) for s in x_proxy.shape[1:])
    if tuple(x.shape[1:]) != input_shape:
        raise DataError(
            f"{path}: examples have shape {tuple(x.shape[1:])}, the run's proxy data {input_shape}"
        )
    if int(y.max()) >= num_classes:
        raise DataError(f"{path}: label {int(y.max())} outside the run's {num_classes} classes")
    return ClientData(
        x_private=x,
        y_private=y,
        x_proxy=x_proxy,
        input_shape=input_shape,
        num_classes=num_classes,
    )
