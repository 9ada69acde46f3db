"""Import paths ``package.module:callable``: how users hand fedkd their own code.

A config names user code by import path so that every process of a run (the driver, Ray
workers, a SuperNode on a device) can find it on its own: a path travels in the config,
a Python object does not.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


class ImportPathError(ValueError):
    """An import path that does not lead to a callable (the message says why, in one line)."""


def is_import_path(spec: str) -> bool:
    """Whether ``spec`` looks like ``package.module:attribute``."""
    module, sep, attr = spec.partition(":")
    return bool(sep and module and attr)


def load_callable(spec: str) -> Callable[..., Any]:
    """The callable named by ``spec`` (``package.module:name``, ``name`` may be dotted).

    Raises
    ------
    ImportPathError
        If the path is malformed, the module cannot be imported (whatever the module
        itself raised), the attribute is missing, or it is not callable.
    """
    module_name, _, attr = spec.partition(":")
    if not is_import_path(spec):
        raise ImportPathError(f"'{spec}' is not an import path 'package.module:callable'")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as err:  # noqa: BLE001 - a user module may raise anything on import
        raise ImportPathError(f"cannot import '{module_name}' ({_one_line(err)})") from err
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ImportPathError(f"module '{module_name}' has no attribute '{attr}'")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ImportPathError(f"'{spec}' is a {type(obj).__name__}, not a callable")
    return obj


def import_path_of(obj: Any) -> str | None:
    """The import path that leads back to ``obj``, or None (lambda, closure, ``__main__``).

    A path is returned only if importing it in a fresh process would give the same
    object, so it can be shipped to another process in place of ``obj``.
    """
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not module or not qualname or module == "__main__" or "<" in qualname:
        return None
    spec = f"{module}:{qualname}"
    try:
        found = load_callable(spec)
    except ImportPathError:
        return None
    return spec if found is obj else None


def _one_line(err: BaseException) -> str:
    """``Type: first line of the message`` of an exception."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__
