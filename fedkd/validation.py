"""Validation accuracy beside test accuracy, for every method.

Settings are chosen on the validation split (``data.validation_fraction``), never on the
test set. Without a validation split these helpers add nothing, so a run's rows, summary
and files are exactly those of a run without the key.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

__all__ = ["FINAL_KEY", "ROW_KEY", "final_val", "mean_val_metrics", "val_metrics"]

#: Key of a metrics row: the student's (mean client's, for ``local``) validation accuracy.
ROW_KEY = "student_val_accuracy"
#: Key of a run summary (``DONE``): the last row's validation accuracy.
FINAL_KEY = "final_val_accuracy"


def val_metrics(
    evaluate: Callable[[np.ndarray, np.ndarray], tuple[float, float]],
    x_val: np.ndarray,
    y_val: np.ndarray,
) -> dict[str, float]:
    """``{ROW_KEY: accuracy}`` on the validation split, or ``{}`` when there is none.

    Parameters
    ----------
    evaluate : callable
        ``evaluate(x, y) -> (loss, accuracy)`` of the model being measured.
    x_val, y_val : numpy.ndarray
        The validation split (its inputs already on the model's features).

    Returns
    -------
    dict
        The row fields to add.
    """
    if len(y_val) == 0:
        return {}
    _, acc = evaluate(x_val, y_val)
    return {ROW_KEY: float(acc)}


def mean_val_metrics(
    evaluates: list[Callable[[np.ndarray, np.ndarray], tuple[float, float]]],
    inputs: list[np.ndarray],
    y_val: np.ndarray,
) -> dict[str, float]:
    """The mean over several models of :func:`val_metrics` (each on its own inputs).

    Parameters
    ----------
    evaluates : list of callable
        One ``evaluate(x, y)`` per model.
    inputs : list of numpy.ndarray
        The validation inputs of each model (its own features).
    y_val : numpy.ndarray
        Validation labels.

    Returns
    -------
    dict
        ``{ROW_KEY: mean accuracy}``, or ``{}`` without a validation split.
    """
    if len(y_val) == 0 or not evaluates:
        return {}
    accs = [val_metrics(f, x, y_val)[ROW_KEY] for f, x in zip(evaluates, inputs, strict=True)]
    return {ROW_KEY: float(np.mean(accs))}


def final_val(final_row: Mapping[str, Any]) -> dict[str, float]:
    """``{FINAL_KEY: ...}`` from a run's last metrics row, or ``{}`` when it has none."""
    if ROW_KEY not in final_row:
        return {}
    return {FINAL_KEY: float(final_row[ROW_KEY])}
