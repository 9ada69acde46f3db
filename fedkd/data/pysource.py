"""``py:`` data sources: arrays from the user's own loader function.

``data.source: py:package.module:callable`` calls ``callable()`` (no arguments) once per
process and reads the arrays from the mapping it returns:

``x_train``, ``y_train`` (required)
    Training examples ``(N, ...)`` and integer labels ``(N,)``.
``x_test``, ``y_test`` (optional, both or neither)
    A test split of the source's own; without it one is held out of train
    (``data.test_fraction``).
``x_proxy`` (optional), ``y_proxy`` (optional, needs ``x_proxy``)
    A public proxy set of the source's own, used instead of holding one out of train
    (``data.proxy_source`` still takes precedence). Its labels are never trained on; they
    only measure the teacher's accuracy on the proxy (without them it reads 0).
``num_classes`` (optional)
    Declared number of classes; labels must lie below it, and classes may be empty.
    Otherwise the largest label + 1, and labels must start at 0 (see
    :mod:`fedkd.data.arrays`).

Features are converted as for the other sources (float32; integer data scaled to
``[0, 1]``). ``py:NAME`` (no ``:`` in NAME) names a loader given to
:func:`fedkd.data.register.register_source` in this process.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from fedkd.data.arrays import (
    DataError,
    Source,
    _check_lengths,
    _make_source,
    _scale_features,
    _to_labels,
)
from fedkd.importpath import ImportPathError, is_import_path, load_callable

Loader = Callable[[], Mapping[str, Any]]

_KEYS = ("x_train", "y_train", "x_test", "y_test", "x_proxy", "y_proxy", "num_classes")
#: Loaders registered in this process by :func:`fedkd.data.register.register_source`.
_LOADERS: dict[str, Loader] = {}


def process_local_source(spec: str) -> bool:
    """Whether ``spec`` is ``py:NAME``: a registered loader, unknown to other processes.

    Use the spec :func:`fedkd.data.register.register_source` returns (an import path when
    the loader has one).
    """
    kind, _, arg = spec.partition(":")
    return kind == "py" and arg in _LOADERS


def load_py(arg: str, spec: str) -> Source:
    """The :class:`~fedkd.data.arrays.Source` returned by the loader ``arg`` names."""
    arrays = _call(arg, spec)
    unknown = sorted(set(arrays) - set(_KEYS))
    if unknown:
        raise DataError(
            f"{spec}: unknown key(s) {', '.join(unknown)} (expected {', '.join(_KEYS)})"
        )
    if "x_train" not in arrays or "y_train" not in arrays:
        raise DataError(f"{spec}: the loader must return x_train and y_train")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise DataError(f"{spec}: give both x_test and y_test, or neither")
    if "y_proxy" in arrays and "x_proxy" not in arrays:
        raise DataError(f"{spec}: y_proxy given without x_proxy")
    return _assemble({k: v for k, v in arrays.items() if k != "num_classes"}, arrays, spec)


def _call(arg: str, spec: str) -> Mapping[str, Any]:
    if arg in _LOADERS:
        loader = _LOADERS[arg]
    elif is_import_path(arg):
        try:
            loader = load_callable(arg)
        except ImportPathError as err:
            raise DataError(f"{spec}: {err}") from err
    else:
        raise DataError(
            f"{spec}: not a registered source nor an import path 'package.module:callable'"
        )
    try:
        arrays = loader()
    except Exception as err:  # noqa: BLE001 - user loaders may raise anything
        text = " ".join(str(err).split())
        raise DataError(f"{spec}: the loader raised {type(err).__name__}: {text}") from err
    if not isinstance(arrays, Mapping):
        raise DataError(
            f"{spec}: the loader returned a {type(arrays).__name__}, not a dict of arrays"
        )
    return arrays


def _assemble(raw: dict[str, Any], arrays: Mapping[str, Any], spec: str) -> Source:
    """Validate, convert and check the arrays, then build the Source."""
    from dataclasses import replace

    try:
        raw = {k: np.asarray(v) for k, v in raw.items()}
    except Exception as err:  # noqa: BLE001 - ragged lists and the like
        raise DataError(f"{spec}: cannot convert the arrays ({err})") from err
    ys = {
        k: _to_labels(raw[k], f"{spec}: {k}") for k in ("y_train", "y_test", "y_proxy") if k in raw
    }
    for split in ("train", "test", "proxy"):
        if f"y_{split}" in ys:
            _check_lengths(raw[f"x_{split}"], ys[f"y_{split}"], f"{spec}: x_{split}/y_{split}")
    names = [k for k in ("x_train", "x_test", "x_proxy") if k in raw]
    if "x_proxy" in raw and raw["x_proxy"].ndim < 2:
        raise DataError(f"{spec}: x_proxy must have shape (M, ...), got {raw['x_proxy'].shape}")
    xs = dict(zip(names, _scale_features([raw[k] for k in names], f"{spec}: x"), strict=True))
    source = _make_source(
        xs["x_train"],
        ys["y_train"],
        xs.get("x_test"),
        ys.get("y_test"),
        spec,
        every_class=arrays.get("num_classes") is None,  # declared: classes may be empty
    )
    if "x_proxy" in xs and tuple(xs["x_proxy"].shape[1:]) != source.input_shape:
        raise DataError(
            f"{spec}: proxy examples have shape {xs['x_proxy'].shape[1:]}, "
            f"train {source.input_shape}"
        )
    num_classes = _declared_classes(arrays.get("num_classes"), source.num_classes, ys, spec)
    x_proxy = xs.get("x_proxy")
    y_proxy = ys.get("y_proxy")
    if x_proxy is not None and y_proxy is None:
        y_proxy = np.full(len(x_proxy), -1, np.int64)  # unknown: teacher accuracy reads 0
    return replace(source, num_classes=num_classes, x_proxy=x_proxy, y_proxy=y_proxy)


def _declared_classes(declared: Any, implied: int, ys: dict[str, np.ndarray], spec: str) -> int:
    """``num_classes`` if declared (every label below it), else the implied count."""
    if declared is None:
        return implied
    if isinstance(declared, bool) or not isinstance(declared, int | np.integer) or declared < 2:
        raise DataError(f"{spec}: num_classes must be an integer >= 2, got {declared!r}")
    for key, y in ys.items():
        if y.size and int(y.max()) >= declared:
            raise DataError(f"{spec}: {key} has label {int(y.max())} >= num_classes={declared}")
    return int(declared)
