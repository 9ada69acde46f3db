"""Run a fedkd simulation from Python: your config, models and data in code.

:func:`run` goes through the same steps as ``fedkd simulate`` (config, preflight,
:func:`fedkd.simulations.runner.simulate`, which drives :func:`fedkd.server.runner.serve`), so a run
from Python and one from the command line with the same config and seed give the same
metrics.

Example
-------
>>> from fedkd.simulations import api
>>> result = api.run(
...     "simulations/configs/quickstart.yaml",
...     overrides=["rounds=2", "runtime.backend=inprocess"],
...     models={"mine": my_factory},  # my_factory(input_shape, num_classes) -> nn.Module
... )  # doctest: +SKIP
>>> result.rows[-1]["student_accuracy"], result.student  # doctest: +SKIP
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from fedkd.config import Config, from_dict, load_config, to_dict
from fedkd.models import ModelFactory, portable_name, register_model

__all__ = ["RunResult", "run"]

#: The name under which :func:`run` registers data passed as ``data=``.
DATA_NAME = "api-data"


@dataclass(frozen=True)
class RunResult:
    """What a run gives back.

    Attributes
    ----------
    rows : list of dict
        The per-round metrics, as in ``metrics.json``.
    student : nn.Module
        The trained student, in eval mode.
    summary : dict
        The run summary (as in ``DONE``).
    config : Config
        The config that ran (models and data named as the run directory records them).
    out : Path
        The run directory.
    """

    rows: list[dict[str, Any]]
    student: nn.Module
    summary: dict[str, Any]
    config: Config
    out: Path


def run(
    config: Config | str | Path | Mapping[str, Any],
    *,
    overrides: list[str] | tuple[str, ...] = (),
    out: str | Path | None = None,
    models: Mapping[str, ModelFactory] | None = None,
    data: Callable[[], Mapping[str, Any]] | Mapping[str, Any] | None = None,
    resume: bool = False,
) -> RunResult:
    """Run a simulation and return its metrics and trained student.

    Parameters
    ----------
    config : Config, path or mapping
        A config, a YAML file, or a nested dict as in a YAML file.
    overrides : sequence of str
        ``key=value`` items, as ``fedkd simulate --set``.
    out : str or Path, optional
        Run directory; a fresh temporary directory when omitted.
    models : mapping of str to factory, optional
        Models to register by name (see :func:`fedkd.models.register_model`); configs name
        them in ``clients.models`` / ``distill.student``. A factory defined at module level
        of an importable module is recorded by its import path, so it also reaches Ray
        workers; a lambda or closure works with ``runtime.backend: inprocess`` only.
    data : callable or mapping, optional
        The data set, as a ``py:`` loader returns it (see :mod:`fedkd.data.pysource`), or
        a loader returning it; replaces ``data.source``.
    resume : bool
        Continue the run in ``out``.

    Raises
    ------
    ConfigError, DataError, ModelError, RunDirError
        The user errors ``fedkd simulate`` reports in one line.
    """
    from fedkd.simulations.preflight import preflight
    from fedkd.simulations.runner import simulate

    from fedkd.rundir import RunDir
    from fedkd.student import load_student

    for name, factory in (models or {}).items():  # before the config names them
        register_model(name, factory)
    cfg = bring_your_own(_as_config(config, overrides), models=models, data=data)
    path = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="fedkd-"))
    preflight(cfg)
    summary = simulate(cfg, path, resume=resume)
    return RunResult(
        rows=RunDir(path).read_metrics(),
        student=load_student(path),
        summary=summary,
        config=cfg,
        out=path,
    )


def bring_your_own(
    cfg: Config,
    *,
    models: Mapping[str, ModelFactory] | None = None,
    data: Callable[[], Mapping[str, Any]] | Mapping[str, Any] | None = None,
) -> Config:
    """Register ``models`` and ``data`` and return ``cfg`` naming what other processes can load.

    Every registered model name in the config becomes its factory's import path when it has
    one; ``data`` becomes ``data.source: py:...``.
    """
    for name, factory in (models or {}).items():
        register_model(name, factory)
    raw = to_dict(cfg)
    raw["clients"]["models"] = [portable_name(n) for n in cfg.clients.models]
    raw["distill"]["student"] = portable_name(cfg.distill.student)
    if data is not None:
        raw["data"]["source"] = _register_data(data)
    return from_dict(raw)


def _register_data(data: Callable[[], Mapping[str, Any]] | Mapping[str, Any]) -> str:
    """Register ``data`` as a ``py:`` source; returns its spec. Stale cached splits go."""
    from fedkd.clientdata import partitions_for
    from fedkd.data import register_source

    loader = data if callable(data) else (lambda: data)
    spec = register_source(DATA_NAME, loader)
    partitions_for.cache_clear()  # partitions of an earlier ``data=`` are stale
    return spec


def _as_config(config: Config | str | Path | Mapping[str, Any], overrides: Any) -> Config:
    if isinstance(config, Config):
        return from_dict(to_dict(config), list(overrides))
    if isinstance(config, Mapping):
        return from_dict(config, list(overrides))
    return load_config(config, list(overrides))
