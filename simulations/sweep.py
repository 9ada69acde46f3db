"""``fedkd sweep``: a grid of runs (fedkd and baselines), resumable, one results table.

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
``method`` (one of :data:`fedkd.baselines.METHODS`, default ``fedkd``) and ``epsilon``
(a target ε turned into each method's noise setting by
:func:`fedkd.baselines.calibrate.apply_epsilon`; ``.inf`` = non-private). Every other key is
a dotted config key.

Resuming: a cell whose directory holds ``DONE`` is skipped; a cell directory without it
(an interrupted run) is deleted and the cell rerun. After every cell ``results.csv`` is
rewritten atomically; at the end the plots are drawn.
"""

from __future__ import annotations

import argparse
import copy
import csv
import io
import itertools
import json
import logging
import math
import re
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from fedkd.atomic import write_json, write_text
from fedkd.config import Config, ConfigError, from_dict

logger = logging.getLogger(__name__)

SPECIAL_KEYS = ("method", "epsilon")
CELL_FILE = "cell.json"
RESULTS_CSV = "results.csv"

#: Columns of ``results.csv`` after the swept keys (``cell`` comes first).
RESULT_COLUMNS: tuple[str, ...] = (
    "method",
    "mechanism",
    "seed",
    "target_epsilon",
    "status",
    "rounds_completed",
    "student_accuracy",
    "worst_client_accuracy",
    "epsilon_example",
    "delta_example",
    "epsilon_client",
    "delta_client",
    "bytes_up",
    "bytes_down",
    "bytes_up_per_client_round",
    "bytes_down_per_client_round",
    "wall_seconds",
    "stopped",
)


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


def parse_spec(raw: Mapping[str, Any], where: Path | None = None) -> SweepSpec:
    """Check a sweep mapping and resolve its ``base``.

    Parameters
    ----------
    raw : mapping
        The loaded sweep YAML.
    where : Path, optional
        Folder of the sweep file; a relative ``base`` path is looked up there first, then
        in the current directory.

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
        candidates = [Path(base_raw)] if Path(base_raw).is_absolute() else []
        if where is not None and not Path(base_raw).is_absolute():
            candidates.append(where / base_raw)
        candidates.append(Path(base_raw))
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            raise ConfigError(f"sweep: base config not found: {base_raw}")
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
    from fedkd.baselines import METHODS
    from fedkd.baselines.calibrate import apply_epsilon

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


# --------------------------------------------------------------------------- running


def _run_cell(cell: Cell, path: Path) -> dict[str, Any]:
    from fedkd.baselines import run_method

    return run_method(cell.method, cell.config, path)


def _cell_worker(cell: Cell, path: Path) -> tuple[dict[str, Any], float]:
    """Run one cell; returns its summary and wall time."""
    if path.exists():
        logger.info("cell %s was interrupted: clearing it and running it again", cell.name)
        shutil.rmtree(path)
    t0 = time.monotonic()
    summary = _run_cell(cell, path)
    return summary, time.monotonic() - t0


def _pool_cell(cell: Cell, path: Path) -> tuple[dict[str, Any], float]:
    """:func:`_cell_worker` in a pool process: one torch thread, so cells do not thrash."""
    import torch

    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    return _cell_worker(cell, path)


def run_sweep(
    spec: SweepSpec,
    out: str | Path,
    *,
    progress: bool = True,
    plots: bool = True,
    jobs: int = 1,
) -> tuple[list[Cell], list[dict[str, Any]]]:
    """Run every cell not yet finished, then write ``results.csv`` and the plots.

    Parameters
    ----------
    spec : SweepSpec
        The parsed sweep.
    out : str or Path
        Sweep folder; cell ``c`` runs in ``out/c.name``.
    progress : bool
        Show a rich progress bar (log lines are written either way).
    plots : bool
        Draw the PNGs at the end.
    jobs : int
        Cells run at once, each in its own process with one torch thread (``1``: in this
        process, one after another). Results do not depend on it: every cell is seeded by
        its own config.

    Returns
    -------
    cells, rows
        The cells and the rows of ``results.csv``.
    """
    from simulations.runner import set_offline_env

    if jobs < 1:
        raise ConfigError(f"sweep: --jobs must be >= 1, got {jobs}")
    set_offline_env()
    out = Path(out)
    cells = expand(spec)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "sweep.yaml", yaml.safe_dump(_spec_dict(spec), sort_keys=False))
    todo = [c for c in cells if not (out / c.name / "DONE").exists()]
    logger.info(
        "sweep: %d cells, %d finished, %d to run (%d at once), in %s",
        len(cells),
        len(cells) - len(todo),
        len(todo),
        jobs,
        out,
    )
    tracker = _Tracker(
        out, cells, todo, _progress(len(cells), len(cells) - len(todo)) if progress else None
    )
    try:
        if jobs == 1:
            for cell in todo:
                tracker.started(cell)
                try:
                    summary, wall = _cell_worker(cell, out / cell.name)
                except ConfigError:
                    raise
                except Exception as err:  # noqa: BLE001 - one failed cell must not stop the sweep
                    tracker.failed(cell, err)
                    continue
                tracker.finished(cell, summary, wall)
        else:
            _run_parallel(todo, out, jobs, tracker)
    finally:
        tracker.stop()
    rows = write_results(out, cells)
    from simulations.sweep_plots import plot_sweep, summary_table

    write_text(out / "results.md", summary_table(rows))
    if plots:
        plot_sweep(out, rows)
    if tracker.num_failed:
        logger.error("%d cell(s) failed; rerun the same command to retry them", tracker.num_failed)
    return cells, rows


def _run_parallel(todo: list[Cell], out: Path, jobs: int, tracker: _Tracker) -> None:
    """Run ``todo`` on a pool of ``jobs`` spawned processes, recording cells as they end."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    ctx = multiprocessing.get_context("spawn")  # no forked torch / thread state
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        pending = {}
        for cell in todo:
            pending[pool.submit(_pool_cell, cell, out / cell.name)] = cell
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                cell = pending.pop(future)
                err = future.exception()
                if isinstance(err, ConfigError):
                    for other in pending:
                        other.cancel()
                    raise err
                if err is not None:
                    tracker.failed(cell, err)
                else:
                    tracker.finished(cell, *future.result())


class _Tracker:
    """Progress bar, log lines, ``cell.json`` and ``results.csv`` as cells finish."""

    def __init__(self, out: Path, cells: list[Cell], todo: list[Cell], bar: Any) -> None:
        self.out, self.cells, self.todo, self.bar = out, cells, todo, bar
        self.ended = 0
        self.num_failed = 0
        self.t0 = time.monotonic()

    def started(self, cell: Cell) -> None:
        if self.bar is not None:
            self.bar[0].update(self.bar[1], description=f"{cell.name[:60]}")

    def failed(self, cell: Cell, err: BaseException) -> None:
        self.ended += 1
        self.num_failed += 1
        logger.error(
            "cell %s failed; rerun the sweep to retry it",
            cell.name,
            exc_info=(type(err), err, err.__traceback__),
        )

    def finished(self, cell: Cell, summary: dict[str, Any], wall: float) -> None:
        self.ended += 1
        write_json(
            self.out / cell.name / CELL_FILE,
            {
                "name": cell.name,
                "values": _plain(cell.values),
                "method": cell.method,
                "wall_seconds": round(wall, 2),
            },
        )
        elapsed = time.monotonic() - self.t0
        eta = elapsed / self.ended * (len(self.todo) - self.ended)
        logger.info(
            "cell %d/%d %s: accuracy %.4f in %.1f s (ETA %.0f s)",
            len(self.cells) - len(self.todo) + self.ended,
            len(self.cells),
            cell.name,
            float(summary.get("student_accuracy", float("nan"))),
            wall,
            eta,
        )
        write_results(self.out, self.cells)
        if self.bar is not None:
            self.bar[0].advance(self.bar[1])

    def stop(self) -> None:
        if self.bar is not None:
            self.bar[0].stop()


def report(
    spec: SweepSpec, out: str | Path, *, plots: bool = True
) -> tuple[list[Cell], list[dict[str, Any]]]:
    """Rewrite ``results.csv``, ``results.md`` and the plots from the finished cells only."""
    from simulations.sweep_plots import plot_sweep, summary_table

    out = Path(out)
    cells = expand(spec)
    if not out.is_dir():
        raise ConfigError(f"sweep folder not found: {out}")
    rows = write_results(out, cells)
    write_text(out / "results.md", summary_table(rows))
    if plots:
        plot_sweep(out, rows)
    return cells, rows


def _progress(total: int, completed: int) -> tuple[Any, Any] | None:
    import sys

    if not sys.stderr.isatty():
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    bar = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=True,
    )
    task = bar.add_task("sweep", total=total, completed=completed)
    bar.start()
    return bar, task


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


# --------------------------------------------------------------------------- results


def mechanism_of(method: str, cfg: Config) -> str:
    """Privacy path of a cell: ``dpsgd``, ``gaussian``, ``pate`` (joined by +) or ``none``."""
    if method == "central-dpsgd":
        return "dpsgd"
    if method == "dp-fedavg":
        return "gaussian"
    if method == "fedkd":
        return "+".join(cfg.privacy.mechanisms) or "none"
    return "none"


def target_epsilon(cell: Cell) -> float:
    """The cell's target ε (``inf`` for a non-private cell)."""
    if "epsilon" in cell.values:
        return _epsilon(cell.values["epsilon"])
    p = cell.config.privacy
    if mechanism_of(cell.method, cell.config) == "none":
        return math.inf
    if p.dpsgd.target_epsilon is not None and "dpsgd" in mechanism_of(cell.method, cell.config):
        return float(p.dpsgd.target_epsilon)
    return float(p.max_epsilon) if p.max_epsilon is not None else float("nan")


def result_row(cell: Cell, path: Path) -> dict[str, Any]:
    """One ``results.csv`` row from a cell's run directory (``status`` says if it finished)."""
    row: dict[str, Any] = {"cell": cell.name}
    row.update({k: _fmt(v) if isinstance(v, list | tuple) else v for k, v in cell.values.items()})
    row.update(
        {
            "method": cell.method,
            "mechanism": mechanism_of(cell.method, cell.config),
            "seed": cell.config.seed,
            "target_epsilon": target_epsilon(cell),
        }
    )
    done = path / "DONE"
    if not done.exists():
        row["status"] = "missing"
        return row
    summary = json.loads(done.read_text())
    metrics_path = path / "metrics.json"
    rounds = json.loads(metrics_path.read_text())["rounds"] if metrics_path.exists() else []
    cell_info = json.loads((path / CELL_FILE).read_text()) if (path / CELL_FILE).exists() else {}
    ups = [v for r in rounds for v in (r.get("bytes_up_per_client") or {}).values()]
    client_rounds = sum(int(r.get("clients", 0) or 0) for r in rounds)
    bytes_down = sum(int(r.get("bytes_down", 0) or 0) for r in rounds)
    row.update(
        {
            "status": "done",
            "rounds_completed": summary.get("rounds_completed"),
            "student_accuracy": summary.get("student_accuracy"),
            "worst_client_accuracy": summary.get("worst_client_accuracy", ""),
            "epsilon_example": summary.get("epsilon_example", ""),
            "delta_example": summary.get("delta_example", ""),
            "epsilon_client": summary.get("epsilon_client", ""),
            "delta_client": summary.get("delta_client", ""),
            "bytes_up": sum(int(r.get("bytes_up", 0) or 0) for r in rounds),
            "bytes_down": bytes_down,
            "bytes_up_per_client_round": round(float(np.mean(ups)), 1) if ups else 0,
            "bytes_down_per_client_round": round(bytes_down / client_rounds, 1)
            if client_rounds
            else 0,
            "wall_seconds": cell_info.get("wall_seconds", summary.get("seconds")),
            "stopped": summary.get("stopped") or "",
        }
    )
    return row


def write_results(out: Path, cells: list[Cell]) -> list[dict[str, Any]]:
    """Rewrite ``out/results.csv`` atomically from every cell's directory; return the rows."""
    columns = ["cell"] + [k for k in swept_keys(cells) if k not in RESULT_COLUMNS]
    columns += list(RESULT_COLUMNS)
    rows = [result_row(c, out / c.name) for c in cells]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k, "") for k in columns})
    write_text(out / RESULTS_CSV, buf.getvalue())
    return rows


# --------------------------------------------------------------------------- CLI


def _cmd_sweep(args: argparse.Namespace) -> int:
    spec = load_spec(args.config)
    out = Path(args.out) if args.out else Path("runs") / ("sweep-" + Path(args.config).stem)
    if args.report_only:
        cells, rows = report(spec, out, plots=not args.no_plots)
    else:
        cells, rows = run_sweep(spec, out, plots=not args.no_plots, jobs=args.jobs)
    done = sum(r.get("status") == "done" for r in rows)
    import sys

    sys.stdout.write(f"{done}/{len(cells)} cells done; results in {out / RESULTS_CSV}\n")
    return 0 if done == len(cells) else 1


def _cmd_baseline(args: argparse.Namespace) -> int:
    from fedkd.baselines import run_method
    from fedkd.config import load_config

    cfg = load_config(args.config, args.set)
    out = Path(args.out) if args.out else Path("runs") / f"{Path(args.config).stem}-{args.method}"
    summary = run_method(args.method, cfg, out)
    import sys

    sys.stdout.write(
        f"{args.method}: final accuracy {summary['student_accuracy']:.4f}; results in {out}\n"
    )
    return 0


def register(subparsers: Any) -> None:
    """Add ``fedkd sweep`` and ``fedkd baseline`` to the ``fedkd`` command line."""
    from fedkd.baselines import METHODS

    sweep = subparsers.add_parser("sweep", help="run a grid of runs and baselines, resumable")
    sweep.add_argument("config", help="sweep YAML (base:, grid: or grids:, set:, per_method:)")
    sweep.add_argument("--out", help="sweep folder (default: runs/sweep-<config name>)")
    sweep.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    sweep.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="cells run at once, one process and one torch thread each (default 1)",
    )
    sweep.add_argument(
        "--report-only",
        action="store_true",
        help="run nothing: rewrite results.csv, results.md and the plots from finished cells",
    )
    sweep.set_defaults(func=_cmd_sweep)

    base = subparsers.add_parser("baseline", help="run one baseline method on a fedkd config")
    base.add_argument("method", choices=METHODS)
    base.add_argument("config", help="fedkd YAML config")
    base.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    base.add_argument("--out", help="run directory (default: runs/<config>-<method>)")
    base.set_defaults(func=_cmd_baseline)


__all__ = [
    "Cell",
    "SweepSpec",
    "cell_name",
    "expand",
    "load_spec",
    "parse_spec",
    "register",
    "report",
    "run_sweep",
    "write_results",
]
