"""``hub:NAME[:IMAGE_COLUMN[:LABEL_COLUMN]]`` sources: Hugging Face data sets.

Loaded through ``flwr_datasets.FederatedDataset`` (splits ``train`` and, if present,
``test``). This is the only source kind that may touch the network, and only because the
user named it; offline it raises DataError.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from fedkd.data.arrays import (
    DataError,
    Source,
    _check_lengths,
    _make_source,
    _scale_features,
    _to_labels,
)

if TYPE_CHECKING:
    import datasets

__all__ = ["load_hub"]

logger = logging.getLogger(__name__)

_HUB_IMAGE_COLUMNS: tuple[str, ...] = ("image", "img", "pixel_values", "x")
_HUB_LABEL_COLUMNS: tuple[str, ...] = ("label", "labels", "fine_label", "y")


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


def load_hub(arg: str, spec: str) -> Source:
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
