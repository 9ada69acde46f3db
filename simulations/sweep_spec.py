"""Sweep files for ``fedkd sweep``: parsing, cells of the grids, their names and configs.

A sweep file is YAML::

    base: quickstart.yaml          # a fedkd config file (relative to this file) or a mapping
    set: {rounds: 10, runtime.backend: inprocess}      # overrides for every cell
    per_method: {dp-fedavg: {privacy.gaussian.clip_norm: 2.0}}   # overrides per method
    grid:                          # or `grids:`, a list of such mappings (cells: the union)
      method: [fedkd]
      privacy.mechanisms: [[dpsgd], [gaussian]]
      epsilon: [1, 2, 4, 8, .inf]
      seed: [0, 1, 2]

A grid may also hold ``set: {key: value}``: overrides for that grid's cells only, not
swept and not part of the cell names (e.g. the recipe of one privacy path).

Each cell of the cartesian product of a grid is one run in ``OUT/<cell name>``; the name
is built from the swept values, so it is the same on every rerun. Two keys are special:
``method`` (one of :data:`fedkd.simulations.baselines.METHODS`, default ``fedkd``) and
``epsilon`` (a target ε turned into each method's noise setting by
:func:`fedkd.simulations.baselines.calibrate.apply_epsilon`; ``.inf`` = non-private).
Every other key is a dotted config key.

Running the cells and writing the results: :mod:`fedkd.simulations.sweep`.
"""

from __future__ import annotations

import copy
import itertools
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fedkd.config import Config, ConfigError, from_dict

logger = logging.getLogger(__name__)

SPECIAL_KEYS = ("method", "epsilon")


@dataclass(frozen=True)
class Cell:
    """One run of a sweep.

    Attributes
    ----------
    name : str
        Directory name, deterministic from the swept values.
    values : dict
        Swept key -> value (including ``method`` / ``epsilon`` when swept).
    method : str
        The method to run.
    config : Config
        The resolved config of the run.
    """

    name: str
    values: dict[str, Any]
    method: str
    config: Config


@dataclass(frozen=True)
class SweepSpec:
    """A parsed sweep file."""

    base: dict[str, Any]
    overrides: dict[str, Any]
    per_method: dict[str, dict[str, Any]]
    grids: tuple[dict[str, list[Any]], ...]
    grid_sets: tuple[dict[str, Any], ...] = ()  # per grid: fixed overrides, not swept


# --------------------------------------------------------------------------- parsing


def _nest(flat: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``{"a.b": 1}`` -> ``{"a": {"b": 1}}`` (nested mappings pass through)."""
    out: dict[str, Any] = {}
    if not isinstance(flat, Mapping):
        raise ConfigError(f"sweep: '{where}' must be a mapping of config keys")
    for key, value in flat.items():
        _assign(out, str(key), copy.deepcopy(value))
    return out


def _assign(raw: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = raw
    for part in parts[:-1]:
        nxt = node.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"sweep: key '{dotted}': '{part}' is not a section")
        node = nxt
    if isinstance(value, Mapping) and isinstance(node.get(parts[-1]), dict):
        node[parts[-1]] = _merge(node[parts[-1]], value)
    else:
        node[parts[-1]] = value


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def resolve_base(base: str, where: Path | None) -> Path:
    """The file a sweep's ``base:`` path names.

    Parameters
    ----------
    base : str
        The ``base:`` value. An absolute path is taken as it is.
    where : Path, optional
        Folder of the sweep file. A relative path is looked up there; only if no such file
        is there, it is looked up in the current directory (with a warning, as that depends
        on where the command is started).

    Returns
    -------
    Path
        An existing file.

    Raises
    ------
    ConfigError
        If neither place holds the file.
    """
    given = Path(base)
    if given.is_absolute() or where is None:
        if given.is_file():
            return given
        raise ConfigError(f"sweep: base config not found: {base}")
    beside = where / given
    if beside.is_file():
        return beside
    if given.is_file():
        logger.warning(
            "sweep: base %s is not beside the sweep file (in %s); using %s from the current "
            "directory",
            base,
            where,
            given.resolve(),
        )
        return given
    raise ConfigError(f"sweep: base config not found: {base} (looked in {where} and in .)")


def parse_spec(raw: Mapping[str, Any], where: Path | None = None) -> SweepSpec:
    """Check a sweep mapping and resolve its ``base``.

    Parameters
    ----------
    raw : mapping
        The loaded sweep YAML.
    where : Path, optional
        Folder of the sweep file; a relative ``base`` path is resolved against it (see
        :func:`resolve_base`).

    Raises
    ------
    ConfigError
        For a missing or malformed part, naming it.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError("sweep file must hold a mapping with base: and grid:")
    unknown = set(raw) - {"base", "set", "per_method", "grid", "grids"}
    if unknown:
        raise ConfigError(
            f"sweep: unknown key(s) {', '.join(sorted(map(str, unknown)))} "
            "(known: base, set, per_method, grid, grids)"
        )
    base_raw = raw.get("base", {})
    if isinstance(base_raw, str):
        path = resolve_base(base_raw, where)
        base = yaml.safe_load(path.read_text()) or {}
    elif isinstance(base_raw, Mapping):
        base = _nest(base_raw, "base")
    else:
        raise ConfigError("sweep: 'base' must be a config file path or a mapping")
    if "grid" in raw and "grids" in raw:
        raise ConfigError("sweep: give either grid: or grids:, not both")
    grids_raw = raw.get("grids", [raw["grid"]] if "grid" in raw else None)
    if not grids_raw or not isinstance(grids_raw, list):
        raise ConfigError("sweep: 'grid' (a mapping) or 'grids' (a list of mappings) is required")
    grids, grid_sets = [], []
    for i, grid in enumerate(grids_raw):
        if not isinstance(grid, Mapping) or not grid:
            raise ConfigError(f"sweep: grid {i} must be a non-empty mapping of key: [values]")
        grid_sets.append(_nest(grid.get("set", {}) or {}, f"grid {i} set"))
        checked: dict[str, list[Any]] = {}
        for key, values in grid.items():
            if key == "set":
                continue
            if not isinstance(values, list) or not values:
                raise ConfigError(f"sweep: grid key '{key}' needs a non-empty list of values")
            checked[str(key)] = values
        if not checked:
            raise ConfigError(f"sweep: grid {i} sweeps no key (only 'set')")
        grids.append(checked)
    per_method_raw = raw.get("per_method", {}) or {}
    if not isinstance(per_method_raw, Mapping):
        raise ConfigError("sweep: 'per_method' must map method names to overrides")
    per_method = {str(m): _nest(v, f"per_method.{m}") for m, v in per_method_raw.items()}
    return SweepSpec(
        base=dict(base),
        overrides=_nest(raw.get("set", {}) or {}, "set"),
        per_method=per_method,
        grids=tuple(grids),
        grid_sets=tuple(grid_sets),
    )


def load_spec(path: str | Path) -> SweepSpec:
    """Load and check a sweep YAML file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"sweep file {path} is not valid YAML") from err
    return parse_spec(raw, path.parent)


# --------------------------------------------------------------------------- cells


def _epsilon(value: Any) -> float:
    if isinstance(value, str) and value.strip().lower() in ("inf", ".inf", "∞", "infinity"):
        return math.inf
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"sweep: epsilon values must be numbers or .inf, got {value!r}")
    return float(value)


def _fmt(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "+".join(_fmt(v) for v in value) or "none"
    if isinstance(value, float):
        if math.isinf(value):
            return "inf"
        return f"{value:g}"
    if value is None:
        return "none"
    return str(value)


def _name_value(key: str, value: Any) -> Any:
    if key == "epsilon":
        try:
            return _epsilon(value)
        except ConfigError:
            return value
    return value


def cell_name(values: Mapping[str, Any]) -> str:
    """Deterministic directory name of a cell from its swept values.

    ``{"method": "fedkd", "epsilon": 1.0, "seed": 0}`` -> ``method=fedkd__epsilon=1__seed=0``.
    Unsafe characters become ``_``; names over 120 characters are shortened with a hash.
    """
    text = "__".join(f"{key}={_fmt(_name_value(key, value))}" for key, value in values.items())
    text = re.sub(r"[^A-Za-z0-9._+=-]", "_", text)
    if len(text) > 120:
        import hashlib

        text = text[:100] + "-" + hashlib.sha1(text.encode()).hexdigest()[:12]
    return text


def expand(spec: SweepSpec) -> list[Cell]:
    """All cells of the sweep, in order, each with its validated config.

    Identical cells (same swept values from two grids) are kept once; if their grids'
    ``set`` overrides differ, that is an error.

    Raises
    ------
    ConfigError
        For an unknown method or a cell whose config is invalid (named in the message).
    """
    from fedkd.simulations.baselines import METHODS
    from fedkd.simulations.baselines.calibrate import apply_epsilon

    cells: list[Cell] = []
    seen: dict[str, dict[str, Any]] = {}  # cell name -> the grid set it came with
    grid_sets = spec.grid_sets or tuple({} for _ in spec.grids)
    for grid, grid_set in zip(spec.grids, grid_sets, strict=True):
        keys = list(grid)
        for combo in itertools.product(*(grid[k] for k in keys)):
            values = dict(zip(keys, combo, strict=True))
            name = cell_name(values)
            if name in seen:
                if seen[name] != grid_set:
                    raise ConfigError(
                        f"sweep: cell {name} comes from two grids with different 'set' "
                        "overrides; sweep a key that tells them apart"
                    )
                continue
            seen[name] = grid_set
            method = str(values.get("method", "fedkd"))
            if method not in METHODS:
                raise ConfigError(
                    f"sweep: unknown method '{method}' (choose from {', '.join(METHODS)})"
                )
            raw = _merge(spec.base, spec.overrides)
            raw = _merge(raw, spec.per_method.get(method, {}))
            raw = _merge(raw, grid_set)
            for key, value in values.items():
                if key not in SPECIAL_KEYS:
                    _assign(raw, key, copy.deepcopy(value))
            try:
                if "epsilon" in values:
                    raw = apply_epsilon(method, raw, _epsilon(values["epsilon"]))
                cfg = from_dict(raw)
            except ConfigError as err:
                raise ConfigError(f"sweep cell {name}: {err}") from err
            cells.append(Cell(name=name, values=values, method=method, config=cfg))
    return cells


def swept_keys(cells: list[Cell]) -> list[str]:
    """Union of swept keys over all cells, in first-seen order."""
    keys: list[str] = []
    for cell in cells:
        keys.extend(k for k in cell.values if k not in keys)
    return keys


def _plain(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, float) and math.isinf(obj):
        return "inf"
    return obj


def _spec_dict(spec: SweepSpec) -> dict[str, Any]:
    return _plain(
        {
            "base": spec.base,
            "set": spec.overrides,
            "per_method": spec.per_method,
            "grids": [
                {**({"set": gs} if gs else {}), **dict(g)}
                for g, gs in zip(spec.grids, spec.grid_sets or ({},) * len(spec.grids), strict=True)
            ],
        }
    )
