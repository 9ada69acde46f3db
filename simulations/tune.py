"""``fedkd tune``: one tuning protocol, the same for every method.

For every tuned series (a method and its fixed settings, see :mod:`fedkd.simulations.tune_spec`)
and every target ε:

1. run the same number K of trials (settings drawn from the series' search space) on the
   tuning seed, each with the validation split of ``validation_fraction``;
2. pick the trial with the best final **validation** accuracy (ties: the first trial). The
   selection reads only ``final_val_accuracy`` from each trial's ``DONE``: test accuracy
   takes no part in it and is not written to ``trials.csv``;
3. run the picked settings on every final seed.

Written into ``DIR``: ``tune.yaml`` (the spec), ``trials/<cell>`` (trial runs),
``trials.csv`` (every trial's settings and validation accuracy), ``selected.yaml`` (the
picked settings per series and ε: per-method-style overrides of a sweep), ``<cell>``
(final runs), ``results.csv`` (the final runs, in the format of a sweep's
``results.csv``), ``summary.csv`` (validation and test accuracy, mean ± std over the final
seeds). Resumable: a cell whose directory holds ``DONE`` is skipped.

The ε reported for the final runs does not include the privacy cost of the search itself
(see ``docs/benchmarks.md``).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from fedkd.simulations.sweep import run_cells, write_results
from fedkd.simulations.sweep_spec import Cell, _fmt, _plain
from fedkd.simulations.tune_spec import TuneSpec, candidates, final_cell, load_tune, trial_cell

from fedkd.atomic import write_text
from fedkd.config import ConfigError

__all__ = ["register", "run_tune", "select", "val_accuracy"]

logger = logging.getLogger(__name__)

TRIALS_DIR = "trials"
TRIALS_CSV = "trials.csv"
SELECTED = "selected.yaml"
SUMMARY_CSV = "summary.csv"
SPEC_FILE = "tune.yaml"

Group = tuple[str, float]  # one series (by name) at one target ε


def val_accuracy(path: Path) -> float | None:
    """A finished run's final validation accuracy (nan if it has none); None if unfinished.

    Only ``final_val_accuracy`` is read: this is the one number trials are compared on.
    """
    done = path / "DONE"
    if not done.exists():
        return None
    value = json.loads(done.read_text()).get("final_val_accuracy")
    return float(value) if isinstance(value, int | float) else float("nan")


def select(scores: list[float]) -> int:
    """Index of the best validation accuracy; ties go to the first, nan ranks last."""
    ranked = [s if math.isfinite(s) else -math.inf for s in scores]
    return int(np.argmax(ranked))  # argmax returns the first of equal maxima


def _trial_cells(spec: TuneSpec) -> dict[Group, list[Cell]]:
    groups: dict[Group, list[Cell]] = {}
    for series in spec.series:
        points = candidates(series, spec.trials, spec.seed)
        for eps in series.epsilons:
            groups[(series.name, eps)] = [
                trial_cell(spec, series, eps, k, p) for k, p in enumerate(points)
            ]
    return groups


def _trial_rows(spec: TuneSpec, groups: dict[Group, list[Cell]], out: Path) -> list[dict]:
    """One row per trial: settings, validation accuracy, achieved ε; no test accuracy."""
    rows = []
    named = {s.name: s for s in spec.series}
    for (name, eps), cells in groups.items():
        series = named[name]
        scores = [val_accuracy(out / TRIALS_DIR / c.name) for c in cells]
        picked = select(scores) if all(s is not None for s in scores) else None
        for k, (cell, score) in enumerate(zip(cells, scores, strict=True)):
            done = out / TRIALS_DIR / cell.name / "DONE"
            summary = json.loads(done.read_text()) if done.exists() else {}
            rows.append(
                {
                    "series": series.name,
                    "method": series.method,
                    "target_epsilon": eps,
                    "trial": k,
                    **{key: _fmt(v) for key, v in cell.values.items() if key in series.space},
                    "status": "missing" if score is None else "done",
                    "val_accuracy": "" if score is None else score,
                    "epsilon_example": summary.get("epsilon_example", ""),
                    "epsilon_client": summary.get("epsilon_client", ""),
                    "selected": picked == k,
                }
            )
    return rows


def _write_csv(path: Path, rows: list[dict[str, Any]], first: list[str]) -> None:
    columns = list(first)
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k, "") for k in columns})
    write_text(path, buf.getvalue())


def _write_trials(spec: TuneSpec, groups: dict[Group, list[Cell]], out: Path) -> list[dict]:
    rows = _trial_rows(spec, groups, out)
    _write_csv(out / TRIALS_CSV, rows, ["series", "method", "target_epsilon", "trial"])
    return rows


def _picked(spec: TuneSpec, groups: dict[Group, list[Cell]], out: Path) -> dict[Group, int]:
    """The selected trial of every group whose trials all finished."""
    picked = {}
    for group, cells in groups.items():
        scores = [val_accuracy(out / TRIALS_DIR / c.name) for c in cells]
        if all(s is not None for s in scores):
            picked[group] = select(scores)
    return picked


def _settings(trial: Cell) -> dict[str, Any]:
    """The searched settings of a trial cell (its values less series, epsilon, trial)."""
    return {k: v for k, v in trial.values.items() if k not in ("series", "epsilon", "trial")}


def _write_selected(groups: dict[Group, list[Cell]], picked: dict[Group, int], out: Path) -> None:
    """``selected.yaml``: series -> ε -> the picked settings (dotted key -> value)."""
    chosen: dict[str, dict[str, Any]] = {}
    for (name, eps), k in picked.items():
        chosen.setdefault(name, {})[_fmt(eps)] = _settings(groups[(name, eps)][k])
    write_text(out / SELECTED, yaml.safe_dump(_plain(chosen), sort_keys=False))


def _final_cells(
    spec: TuneSpec, groups: dict[Group, list[Cell]], picked: dict[Group, int]
) -> list[Cell]:
    cells = []
    named = {s.name: s for s in spec.series}
    for (name, eps), k in picked.items():
        settings = _settings(groups[(name, eps)][k])
        cells.extend(final_cell(spec, named[name], eps, k, settings, s) for s in spec.seeds)
    return cells


def _summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Validation and test accuracy, mean ± std over the final seeds, per series and ε."""
    groups: dict[tuple[str, str, Any], list[dict[str, Any]]] = {}
    for r in rows:
        if r.get("status") == "done":
            groups.setdefault((r["series"], r["method"], r["target_epsilon"]), []).append(r)
    out = []
    for (series, method, eps), rs in groups.items():
        row: dict[str, Any] = {"series": series, "method": method, "target_epsilon": eps}
        row["seeds"] = len(rs)
        for col, name in (("val_accuracy", "val"), ("student_accuracy", "test")):
            values = np.asarray([float(r[col]) for r in rs if r.get(col) not in ("", None)])
            row[f"{name}_accuracy_mean"] = float(values.mean()) if len(values) else ""
            row[f"{name}_accuracy_std"] = float(values.std(ddof=1)) if len(values) > 1 else ""
        out.append(row)
    return out


def _check_out(spec: TuneSpec, out: Path) -> None:
    """Refuse a folder holding a tune of another spec (its cells would be mistaken)."""
    saved = out / SPEC_FILE
    text = yaml.safe_dump(_plain(spec.raw), sort_keys=False)
    if saved.exists() and saved.read_text() != text:
        raise ConfigError(f"{out} holds a tune of another spec ({saved}); pass another --out")
    out.mkdir(parents=True, exist_ok=True)
    write_text(saved, text)


def run_tune(
    spec: TuneSpec, out: str | Path, *, jobs: int = 1, progress: bool = True
) -> dict[str, Any]:
    """Run the trials, select on validation accuracy, run the finals, write the results.

    Parameters
    ----------
    spec : TuneSpec
        The parsed tune file.
    out : str or Path
        Tune folder (see the module docstring for what it holds).
    jobs : int
        Runs at once, one process each (as for ``fedkd sweep``).
    progress : bool
        Show progress bars.

    Returns
    -------
    dict
        ``trials`` (rows of ``trials.csv``), ``selected`` (group -> trial index),
        ``results`` (rows of ``results.csv``), ``summary`` (rows of ``summary.csv``),
        ``failed`` (runs that failed; rerun the command to retry them).
    """
    if jobs < 1:
        raise ConfigError(f"tune: --jobs must be >= 1, got {jobs}")
    out = Path(out)
    _check_out(spec, out)
    groups = _trial_cells(spec)
    trials = [c for cells in groups.values() for c in cells]
    failed = run_cells(
        trials,
        out / TRIALS_DIR,
        jobs=jobs,
        progress=progress,
        results=lambda *_: _write_trials(spec, groups, out),
        shown="final_val_accuracy",
    )
    trial_rows = _write_trials(spec, groups, out)
    picked = _picked(spec, groups, out)
    _write_selected(groups, picked, out)
    finals = _final_cells(spec, groups, picked)
    failed += run_cells(finals, out, jobs=jobs, progress=progress)
    rows = write_results(out, finals)
    summary = _summary(rows)
    _write_csv(out / SUMMARY_CSV, summary, ["series", "method", "target_epsilon", "seeds"])
    if failed or len(picked) < len(groups):
        logger.error("tune: %d run(s) failed; rerun the same command to retry them", failed)
    return {
        "trials": trial_rows,
        "selected": picked,
        "results": rows,
        "summary": summary,
        "failed": failed,
    }


def _cmd_tune(args: argparse.Namespace) -> int:
    spec = load_tune(args.config)
    out = Path(args.out) if args.out else Path("runs") / ("tune-" + Path(args.config).stem)
    result = run_tune(spec, out, jobs=args.jobs)
    done = sum(r.get("status") == "done" for r in result["results"])
    expected = sum(len(s.epsilons) for s in spec.series) * len(spec.seeds)
    sys.stdout.write(
        f"{len(result['selected'])} settings selected on validation accuracy; "
        f"{done}/{expected} final runs done; results in {out / 'results.csv'}\n"
    )
    return 0 if done == expected else 1


def register(subparsers: Any) -> None:
    """Add ``fedkd tune`` to the ``fedkd`` command line."""
    tune = subparsers.add_parser(
        "tune", help="tune every method the same way on a validation split, then run seeds"
    )
    tune.add_argument("config", help="tune YAML (base:, trials:, methods:, seeds:, ...)")
    tune.add_argument("--out", help="tune folder (default: runs/tune-<config name>)")
    tune.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="runs at once, one process and one torch thread each (default 1)",
    )
    tune.set_defaults(func=_cmd_tune)
