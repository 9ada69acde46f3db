"""Tune files for ``fedkd tune``: parsing, the trials of each method, their cells.

A tune file is YAML::

    base: quickstart.yaml           # a fedkd config file (relative to this file) or a mapping
    set: {rounds: 10, runtime.backend: inprocess}    # overrides for every run
    trials: 4                       # K: the same number of trials for every method and ε
    seed: 0                         # seed of the search-space sampler
    validation_fraction: 0.15       # data.validation_fraction of every run, > 0
    tune_seed: 100                  # the trials run on this seed
    seeds: [0, 1, 2]                # the picked settings run on these (>= 3, not tune_seed)
    methods:                        # a name per tuned series
      central:
        space: {clients.lr: {low: 0.01, high: 0.5, log: true}, clients.batch_size: [32, 64]}
      fedkd-gaussian:
        method: fedkd               # default: the series name
        epsilon: [1, 2, 4, 8]       # default: [.inf] (non-private)
        set: {privacy.mechanisms: [gaussian]}        # fixed for this series
        space: {clients.lr: [0.05, 0.1, 0.2], distill.lr: [0.02, 0.05]}

A search space maps dotted config keys to a list (grid choices) or a range ``{low, high,
log}`` (uniform, or log-uniform with ``log: true``; integers when both ends are integers).
A space of lists only with at least ``trials`` points gives ``trials`` distinct grid
points; any range makes every trial an independent draw. Draws come from a
``numpy.random.Generator`` seeded by ``seed`` and the series name, and every ε of a series
gets the same candidates. The noise keys set by
:func:`fedkd.simulations.baselines.calibrate.apply_epsilon`, ``seed`` and
``data.validation_fraction`` cannot be searched.

Running the trials, the selection and the final runs: :mod:`fedkd.simulations.tune`.
"""

from __future__ import annotations

import copy
import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from fedkd.simulations.sweep_spec import (
    Cell,
    _assign,
    _epsilon,
    _merge,
    _nest,
    cell_name,
    resolve_base,
)

from fedkd.config import Config, ConfigError, from_dict

__all__ = ["Range", "Series", "TuneSpec", "candidates", "final_cell", "load_tune", "parse_tune"]

_TOP_KEYS = ("base", "set", "trials", "seed", "validation_fraction", "tune_seed", "seeds")
_SERIES_KEYS = ("method", "epsilon", "set", "space")
#: Keys a search space may not hold: the calibration, the seeds and the split own them.
RESERVED = (
    "seed",
    "data.validation_fraction",
    "privacy.dpsgd.target_epsilon",
    "privacy.dpsgd.noise_multiplier",
    "privacy.gaussian.noise_multiplier",
    "privacy.pate.sigma",
    "privacy.pate.sigma_threshold",
)


@dataclass(frozen=True)
class Range:
    """A continuous (or integer) search range: uniform, or log-uniform with ``log``."""

    low: float
    high: float
    log: bool = False
    integer: bool = False


@dataclass(frozen=True)
class Series:
    """One tuned method: its fixed overrides, target ε values and search space."""

    name: str
    method: str
    epsilons: tuple[float, ...]
    fixed: dict[str, Any]
    space: dict[str, list[Any] | Range]


@dataclass(frozen=True)
class TuneSpec:
    """A parsed tune file (see the module docstring)."""

    base: dict[str, Any]
    overrides: dict[str, Any]
    series: tuple[Series, ...]
    trials: int
    seed: int
    validation_fraction: float
    tune_seed: int
    seeds: tuple[int, ...]
    raw: dict[str, Any] = field(default_factory=dict, compare=False)


# --------------------------------------------------------------------------- parsing


def _int(raw: Mapping[str, Any], key: str, default: int | None = None) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"tune: '{key}' must be an integer, got {value!r}")
    return value


def _range(key: str, value: Mapping[str, Any]) -> Range:
    unknown = set(value) - {"low", "high", "log"}
    if unknown or not {"low", "high"} <= set(value):
        raise ConfigError(f"tune: space key '{key}' range needs low and high (and optional log)")
    low, high, log = value["low"], value["high"], value.get("log", False)
    if any(isinstance(v, bool) or not isinstance(v, int | float) for v in (low, high)):
        raise ConfigError(f"tune: space key '{key}': low and high must be numbers")
    if not low < high:
        raise ConfigError(f"tune: space key '{key}': low must be < high, got {low} and {high}")
    if not isinstance(log, bool) or (log and low <= 0):
        raise ConfigError(f"tune: space key '{key}': log needs true/false and low > 0")
    return Range(float(low), float(high), log, isinstance(low, int) and isinstance(high, int))


def _space(name: str, raw: Any) -> dict[str, list[Any] | Range]:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"tune: methods.{name}.space must map config keys to lists or ranges")
    space: dict[str, list[Any] | Range] = {}
    for key, value in raw.items():
        key = str(key)
        if key in RESERVED:
            raise ConfigError(f"tune: methods.{name}.space may not search '{key}' (set by tune)")
        if isinstance(value, list) and value:
            space[key] = list(value)
        elif isinstance(value, Mapping):
            space[key] = _range(key, value)
        else:
            raise ConfigError(
                f"tune: space key '{key}' needs a non-empty list or {{low, high, log}}"
            )
    return space


def _series(name: str, raw: Any) -> Series:
    from fedkd.simulations.baselines import METHODS

    if not isinstance(raw, Mapping):
        raise ConfigError(f"tune: methods.{name} must be a mapping (method, epsilon, set, space)")
    unknown = set(raw) - set(_SERIES_KEYS)
    if unknown:
        raise ConfigError(
            f"tune: unknown key(s) {', '.join(sorted(map(str, unknown)))} in methods.{name} "
            f"(known: {', '.join(_SERIES_KEYS)}; trials is one number for every method)"
        )
    method = str(raw.get("method", name))
    if method not in METHODS:
        raise ConfigError(
            f"tune: methods.{name}: unknown method '{method}' (choose from {', '.join(METHODS)})"
        )
    eps = raw.get("epsilon", [math.inf])
    eps = eps if isinstance(eps, list) else [eps]
    if not eps:
        raise ConfigError(f"tune: methods.{name}.epsilon must list at least one target")
    return Series(
        name=name,
        method=method,
        epsilons=tuple(_epsilon(e) for e in eps),
        fixed=_nest(raw.get("set", {}) or {}, f"methods.{name}.set"),
        space=_space(name, raw.get("space", {}) or {}),
    )


def _base(base_raw: Any, where: Path | None) -> dict[str, Any]:
    if isinstance(base_raw, str):
        return dict(yaml.safe_load(resolve_base(base_raw, where).read_text()) or {})
    if isinstance(base_raw, Mapping):
        return _nest(base_raw, "base")
    raise ConfigError("tune: 'base' must be a config file path or a mapping")


def _seeds(raw: Mapping[str, Any]) -> tuple[int, tuple[int, ...]]:
    """``tune_seed`` and the final ``seeds`` (at least 3 distinct, without ``tune_seed``)."""
    seeds = raw.get("seeds")
    if not isinstance(seeds, list) or not all(
        isinstance(s, int) and not isinstance(s, bool) for s in seeds
    ):
        raise ConfigError(f"tune: 'seeds' must be a list of integers, got {seeds!r}")
    if len(set(seeds)) < 3 or len(set(seeds)) != len(seeds):
        raise ConfigError(f"tune: 'seeds' needs at least 3 distinct seeds, got {seeds}")
    tune_seed = _int(raw, "tune_seed", None)
    if tune_seed in seeds:
        raise ConfigError(
            f"tune: 'tune_seed' {tune_seed} is one of 'seeds': the final runs must not reuse "
            "the run the settings were chosen on"
        )
    return tune_seed, tuple(seeds)


def parse_tune(raw: Mapping[str, Any], where: Path | None = None) -> TuneSpec:
    """Check a tune mapping and resolve its ``base``.

    Parameters
    ----------
    raw : mapping
        The loaded tune YAML.
    where : Path, optional
        Folder of the tune file (a relative ``base`` is resolved against it).

    Returns
    -------
    TuneSpec
        The parsed spec; every trial and final config is checked too.

    Raises
    ------
    ConfigError
        One line naming the key that is missing or wrong.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError("tune file must hold a mapping with base:, trials: and methods:")
    unknown = set(raw) - {*_TOP_KEYS, "methods"}
    if unknown:
        raise ConfigError(
            f"tune: unknown key(s) {', '.join(sorted(map(str, unknown)))} "
            f"(known: {', '.join(_TOP_KEYS)}, methods)"
        )
    trials = _int(raw, "trials", None)
    if trials < 1:
        raise ConfigError(f"tune: 'trials' must be >= 1, got {trials}")
    fraction = raw.get("validation_fraction")
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 < fraction < 1:
        raise ConfigError(
            f"tune: 'validation_fraction' must be in (0, 1) (settings are chosen on it), "
            f"got {fraction!r}"
        )
    tune_seed, seeds = _seeds(raw)
    methods = raw.get("methods")
    if not isinstance(methods, Mapping) or not methods:
        raise ConfigError("tune: 'methods' must map series names to method, epsilon, set, space")
    spec = TuneSpec(
        base=_base(raw.get("base", {}), where),
        overrides=_nest(raw.get("set", {}) or {}, "set"),
        series=tuple(_series(str(n), v) for n, v in methods.items()),
        trials=trials,
        seed=_int(raw, "seed", 0),
        validation_fraction=float(fraction),
        tune_seed=tune_seed,
        seeds=seeds,
        raw=dict(raw),
    )
    for s in spec.series:
        for settings in candidates(s, trials, spec.seed):  # every config is valid up front
            for eps in s.epsilons:
                run_config(spec, s, settings, eps, tune_seed)
    return spec


def load_tune(path: str | Path) -> TuneSpec:
    """Load and check a tune YAML file (errors name the file or the key)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"tune file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"tune file {path} is not valid YAML") from err
    return parse_tune(raw, path.parent)


# --------------------------------------------------------------------------- trials


def _round(value: float) -> float:
    """Four significant digits: readable settings, the same on every platform."""
    return float(f"{value:.4g}")


def _draw(r: Range, rng: np.random.Generator) -> float | int:
    if r.log:
        value = math.exp(rng.uniform(math.log(r.low), math.log(r.high)))
    else:
        value = rng.uniform(r.low, r.high)
    return int(min(max(round(value), r.low), r.high)) if r.integer else _round(value)


def candidates(series: Series, trials: int, seed: int) -> list[dict[str, Any]]:
    """The ``trials`` settings tried for ``series`` (the same for each of its ε).

    Parameters
    ----------
    series : Series
        The series and its search space.
    trials : int
        K, the same for every series.
    seed : int
        The spec's sampler seed (mixed with the series name).

    Returns
    -------
    list of dict
        Dotted key -> value, one mapping per trial.

    Raises
    ------
    ConfigError
        If a space of lists only has fewer than ``trials`` points (K trials of the same
        setting would select on noise alone).
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(series.name.encode())]))
    keys = list(series.space)
    if all(isinstance(series.space[k], list) for k in keys):
        sizes = [len(series.space[k]) for k in keys]
        points = math.prod(sizes)
        if points < trials:
            raise ConfigError(
                f"tune: methods.{series.name}.space has {points} point(s), fewer than "
                f"trials={trials}; add values or a range"
            )
        chosen = sorted(rng.choice(points, size=trials, replace=False).tolist())
        return [_grid_point(series.space, keys, sizes, i) for i in chosen]
    out = []
    for _ in range(trials):
        point = {}
        for key in keys:
            dim = series.space[key]
            if isinstance(dim, Range):
                point[key] = _draw(dim, rng)
            else:
                point[key] = copy.deepcopy(dim[int(rng.integers(len(dim)))])
        out.append(point)
    return out


def _grid_point(space: Mapping[str, Any], keys: list[str], sizes: list[int], i: int) -> dict:
    """Point ``i`` of the grid in row-major order (the last key varies fastest)."""
    point = {}
    for key, size in zip(reversed(keys), reversed(sizes), strict=True):
        i, j = divmod(i, size)
        point[key] = copy.deepcopy(space[key][j])
    return {k: point[k] for k in keys}


def run_config(
    spec: TuneSpec, series: Series, settings: Mapping[str, Any], epsilon: float, seed: int
) -> Config:
    """The config of one run: base, ``set``, the series' ``set``, the settings, the
    validation split, the seed, then the noise calibrated to ``epsilon``."""
    from fedkd.simulations.baselines.calibrate import apply_epsilon

    raw = _merge(_merge(spec.base, spec.overrides), series.fixed)
    for key, value in settings.items():
        _assign(raw, key, copy.deepcopy(value))
    _assign(raw, "data.validation_fraction", spec.validation_fraction)
    raw["seed"] = seed
    try:
        return from_dict(apply_epsilon(series.method, raw, epsilon))
    except ConfigError as err:
        raise ConfigError(f"tune {series.name} ε={epsilon:g}: {err}") from err


def trial_cell(spec: TuneSpec, series: Series, epsilon: float, k: int, settings: dict) -> Cell:
    """Trial ``k`` of ``series`` at ``epsilon``, on the tuning seed."""
    values = {"series": series.name, "epsilon": epsilon, "trial": k}
    return Cell(
        name=cell_name(values),
        values={**values, **settings},
        method=series.method,
        config=run_config(spec, series, settings, epsilon, spec.tune_seed),
    )


def final_cell(
    spec: TuneSpec, series: Series, epsilon: float, k: int, settings: dict, seed: int
) -> Cell:
    """The picked trial ``k`` of ``series`` at ``epsilon`` on final seed ``seed``.

    The directory name carries the trial, so a cell finished with other settings is never
    taken for this one; the values (the columns of ``results.csv``) are those of a sweep.
    """
    values = {"series": series.name, "method": series.method, "epsilon": epsilon, "seed": seed}
    return Cell(
        name=cell_name({"series": series.name, "epsilon": epsilon, "trial": k, "seed": seed}),
        values=values,
        method=series.method,
        config=run_config(spec, series, settings, epsilon, seed),
    )
