"""Register a loader function as a ``py:NAME`` data source of this process."""

from __future__ import annotations

from fedkd.data.arrays import DataError
from fedkd.data.pysource import _LOADERS, Loader
from fedkd.data.sources import load_source
from fedkd.data.splits import build_splits
from fedkd.importpath import import_path_of

__all__ = ["register_source"]


def register_source(name: str, loader: Loader) -> str:
    """Make ``py:NAME`` load from ``loader`` in this process.

    Returns
    -------
    str
        The spec a config should use: ``py:package.module:callable`` when ``loader`` has an
        import path (any process can load it), else ``py:NAME`` (this process only).

    Re-registering a name with another loader drops the cached sources and splits
    (:func:`fedkd.simulations.api.run` also drops the cached client partitions).
    """
    if not name or ":" in name or not callable(loader):
        raise DataError(
            f"cannot register data source '{name}': need a name without ':' and a callable"
        )
    if _LOADERS.get(name) is not loader:  # a new loader under an old name: drop cached data
        load_source.cache_clear()
        build_splits.cache_clear()
    _LOADERS[name] = loader
    path = import_path_of(loader)
    return f"py:{path}" if path else f"py:{name}"
