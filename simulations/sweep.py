"""``fedkd sweep``: run a grid of cells (resumable, optionally in parallel), write the results.

The sweep file format, cells and names are in :mod:`fedkd.simulations.sweep_spec`. Resuming: a
cell whose directory holds ``DONE`` is skipped; a cell directory without it (an interrupted
run) is deleted and the cell rerun. After every cell ``results.csv`` is rewritten
atomically; at the end the plots are drawn.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import logging
import math
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from fedkd.simulations.sweep_columns import RESULT_COLUMNS
from fedkd.simulations.sweep_spec import (  # noqa: F401 - re-exported: the sweep API in one place
    SPECIAL_KEYS,
    Cell,
    SweepSpec,
    _epsilon,
    _fmt,
    _plain,
    _spec_dict,
    cell_name,
    expand,
    load_spec,
    parse_spec,
    swept_keys,
)

from fedkd.atomic import write_json, write_text
from fedkd.config import Config, ConfigError

logger = logging.getLogger(__name__)

CELL_FILE = "cell.json"
RESULTS_CSV = "results.csv"

# --------------------------------------------------------------------------- running


def _run_cell(cell: Cell, path: Path) -> dict[str, Any]:
    from fedkd.simulations.baselines import run_method

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
    if jobs < 1:
        raise ConfigError(f"sweep: --jobs must be >= 1, got {jobs}")
    out = Path(out)
    cells = expand(spec)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "sweep.yaml", yaml.safe_dump(_spec_dict(spec), sort_keys=False))
    failed = run_cells(cells, out, jobs=jobs, progress=progress)
    rows = write_results(out, cells)
    from fedkd.simulations.sweep_plots import plot_sweep, summary_table

    write_text(out / "results.md", summary_table(rows, out))
    if plots:
        plot_sweep(out, rows)
    if failed:
        logger.error("%d cell(s) failed; rerun the same command to retry them", failed)
    return cells, rows


def run_cells(
    cells: list[Cell],
    out: Path,
    *,
    jobs: int = 1,
    progress: bool = True,
    results: Callable[[Path, list[Cell]], Any] | None = None,
    shown: str = "student_accuracy",
) -> int:
    """Run every cell of ``cells`` without ``DONE`` in ``out/<cell name>``.

    Parameters
    ----------
    cells : list of Cell
        The cells (finished ones are skipped: resuming).
    out : Path
        Folder of the cells' run directories.
    jobs : int
        Cells run at once (see :func:`run_sweep`).
    progress : bool
        Show a progress bar.
    results : callable, optional
        ``results(out, cells)``, called after each finished cell (default
        :func:`write_results`: ``out/results.csv`` rewritten).
    shown : str
        The summary key logged for each finished cell.

    Returns
    -------
    int
        The number of cells that failed (a ConfigError in a cell is raised instead).
    """
    from fedkd.simulations.runner import set_offline_env

    set_offline_env()
    todo = [c for c in cells if not (out / c.name / "DONE").exists()]
    logger.info(
        "%d cells, %d finished, %d to run (%d at once), in %s",
        len(cells),
        len(cells) - len(todo),
        len(todo),
        jobs,
        out,
    )
    tracker = _Tracker(
        out, cells, todo, _progress(len(cells), len(cells) - len(todo)) if progress else None
    )
    tracker.results = write_results if results is None else results
    tracker.shown = shown
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
    return tracker.num_failed


def _run_parallel(todo: list[Cell], out: Path, jobs: int, tracker: _Tracker) -> None:
    """Run ``todo`` on a pool of ``jobs`` spawned processes, recording cells as they end.

    Workers ignore SIGINT, so Ctrl-C (which a terminal sends to the whole process group)
    reaches only this process. On any exception here, Ctrl-C included, queued cells are
    cancelled and the workers are terminated at once: a cell cut short has no ``DONE`` file
    and is rerun by the next ``fedkd sweep`` on the same directory. (Leaving the pool through
    ``with`` would instead wait for every queued cell, and a second Ctrl-C during that wait
    left the process hanging on its idle workers at exit.)
    """
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    ctx = multiprocessing.get_context("spawn")  # no forked torch / thread state
    ours_before = set(multiprocessing.active_children())
    verbose = logging.getLogger("flwr").propagate  # the CLI turns it off unless -v
    pool = ProcessPoolExecutor(
        max_workers=jobs, mp_context=ctx, initializer=_init_worker, initargs=(verbose,)
    )
    try:
        pending = {pool.submit(_pool_cell, cell, out / cell.name): cell for cell in todo}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                cell = pending.pop(future)
                err = future.exception()
                if isinstance(err, ConfigError):
                    raise err
                if err is not None:
                    tracker.failed(cell, err)
                else:
                    tracker.finished(cell, *future.result())
    except BaseException:
        with _sigint_ignored():
            pool.shutdown(wait=False, cancel_futures=True)
            workers = [p for p in multiprocessing.active_children() if p not in ours_before]
            for proc in workers:
                proc.terminate()
            for proc in workers:
                proc.join(timeout=5)
                if proc.is_alive():  # a handler in the cell delayed SIGTERM
                    proc.kill()
            pool.shutdown(wait=True)  # its manager thread reaps the dead workers and ends
        raise
    pool.shutdown(wait=True)


def _init_worker(verbose: bool = False) -> None:
    """Pool initializer: Ctrl-C is the parent's to handle (it terminates the workers), and
    Flower's log stays quiet in workers as in the parent unless ``-v`` was given (a spawned
    worker would otherwise print each of Flower's lines twice)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A spawned worker has no handler of the CLI's: warnings in the parent's plain format.
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(levelname)-8s %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)
    if not verbose:
        import flwr.common.logger  # noqa: F401 - Flower configures its logger on import

        flwr_logger = logging.getLogger("flwr")
        flwr_logger.setLevel(logging.WARNING)
        flwr_logger.propagate = False


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Ignore further Ctrl-C while the pool is torn down (main thread only)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class _Tracker:
    """Progress bar, log lines, ``cell.json`` and ``results.csv`` as cells finish."""

    def __init__(self, out: Path, cells: list[Cell], todo: list[Cell], bar: Any) -> None:
        self.out, self.cells, self.todo, self.bar = out, cells, todo, bar
        self.ended = 0
        self.num_failed = 0
        self.t0 = time.monotonic()
        self.results: Callable[[Path, list[Cell]], Any] = write_results
        self.shown = "student_accuracy"

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
            "cell %d/%d %s: %s %.4f in %.1f s (ETA %.0f s)",
            len(self.cells) - len(self.todo) + self.ended,
            len(self.cells),
            cell.name,
            "accuracy" if self.shown == "student_accuracy" else self.shown,
            float(summary.get(self.shown, float("nan"))),
            wall,
            eta,
        )
        self.results(self.out, self.cells)
        if self.bar is not None:
            self.bar[0].advance(self.bar[1])

    def stop(self) -> None:
        if self.bar is not None:
            self.bar[0].stop()


def report(
    spec: SweepSpec, out: str | Path, *, plots: bool = True
) -> tuple[list[Cell], list[dict[str, Any]]]:
    """Rewrite ``results.csv``, ``results.md`` and the plots from the finished cells only."""
    from fedkd.simulations.sweep_plots import plot_sweep, summary_table

    out = Path(out)
    cells = expand(spec)
    if not out.is_dir():
        raise ConfigError(f"sweep folder not found: {out}")
    rows = write_results(out, cells)
    write_text(out / "results.md", summary_table(rows, out))
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


def _accounting_of(summary: dict[str, Any], path: Path) -> dict[str, str]:
    """The run's accountant (from ``DONE``) and the neighbouring relations of its ledger."""
    from fedkd.simulations.report import ledger_relations

    accountant = summary.get("accountant") or summary.get("accounting") or ""
    relation = ledger_relations(path / "ledger.json") if accountant else ""
    return {"accountant": str(accountant), "neighbouring": relation}


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
            "val_accuracy": summary.get("final_val_accuracy", ""),
            **_accounting_of(summary, path),
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
    from fedkd.simulations.baselines import run_method

    from fedkd.config import load_config

    cfg = load_config(args.config, args.set)
    out = Path(args.out) if args.out else Path("runs") / f"{Path(args.config).stem}-{args.method}"
    summary = run_method(args.method, cfg, out)
    import sys

    privacy = ""
    if "epsilon_example" in summary and "relation" in summary:
        privacy = (
            f", ε = {summary['epsilon_example']:.3f} (δ = {summary['delta_example']:g}, "
            f"{summary['accountant']})"
        )
    sys.stdout.write(
        f"{args.method}: final accuracy {summary['student_accuracy']:.4f}{privacy}; "
        f"results in {out}\n"
    )
    return 0


def register(subparsers: Any) -> None:
    """Add ``fedkd sweep`` and ``fedkd baseline`` to the ``fedkd`` command line."""
    from fedkd.simulations.baselines import METHODS

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
