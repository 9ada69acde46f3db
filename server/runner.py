"""Drive a whole fedkd run on any Flower ``Grid``: resume, rounds, checkpoints, results."""

from __future__ import annotations

import logging
import time
from typing import Any

from flwr.serverapp import Grid

from fedkd.clientdata import splits_for
from fedkd.config import Config
from fedkd.mechanisms import CentralMechanism, RunStopped
from fedkd.plots import plot_run
from fedkd.rundir import RunDir
from fedkd.student import Student
from fedkd.teacher import TeacherCache
from fedkd.validation import final_val

from .recorder import RunRecorder
from .strategy import DistillStrategy

logger = logging.getLogger(__name__)


def serve(grid: Grid, cfg: Config, run: RunDir, *, state_dir: str | None = None) -> dict[str, Any]:
    """Run (or resume) the rounds of ``cfg`` on ``grid``, writing results into ``run``.

    The run directory's checkpoint decides where to start: a run with a checkpoint at
    round r continues with round r + 1. Returns the summary also written to ``DONE``; a
    run that already finished is left as it is and its ``DONE`` returned.
    """
    if run.is_done():
        logger.info("%s already finished; nothing to run", run.path)
        return run.read_done()
    from fedkd.privacy.checks import warn_few_clients

    warn_few_clients(cfg)
    strategy, recorder = _build(cfg, run, state_dir)
    t_start = time.monotonic()
    stopped = None
    if strategy.first_round < cfg.rounds:
        try:
            strategy.start(
                grid,
                strategy.teacher,
                num_rounds=cfg.rounds - strategy.first_round,
                timeout=cfg.runtime.round_timeout,
                evaluate_fn=strategy.evaluate,
            )
        except RunStopped as stop:
            stopped = str(stop)
            logger.warning("%s", stop)
    summary = _summary(recorder.rows, stopped, t_start, strategy)
    if recorder.rows:
        plot_run(recorder.rows, run.path / "metrics.png")
    run.mark_done(summary)
    return summary


def _build(cfg: Config, run: RunDir, state_dir: str | None) -> tuple[DistillStrategy, RunRecorder]:
    """The run's server state, restored from its checkpoint when there is one."""
    splits = splits_for(cfg.data, cfg.seed)
    num_classes = int(splits.num_classes)
    student = Student(cfg, tuple(splits.input_shape), num_classes, x_public=splits.x_proxy)
    cache = TeacherCache.empty(len(splits.x_proxy), num_classes, cfg.distill.teacher_ema)
    mechanism = CentralMechanism(
        cfg, num_examples=len(splits.y_private), num_proxy=len(splits.x_proxy)
    )
    recorder = RunRecorder(cfg, run, student, cache, mechanism)
    ckpt = recorder.restore()
    strategy = DistillStrategy(
        cfg,
        splits,
        mechanism,
        student,
        cache,
        recorder,
        first_round=int(ckpt["round"]) if ckpt is not None else 0,
        state_dir=state_dir,
    )
    if ckpt is not None:
        strategy.load_state_dict(ckpt)
    recorder.strategy_state = strategy.state_dict
    return strategy, recorder


def _summary(
    rows: list[dict[str, Any]], stopped: str | None, t_start: float, strategy: DistillStrategy
) -> dict[str, Any]:
    """The run's ``DONE`` summary (status ``clients_failed`` when some never answered)."""
    final = rows[-1] if rows else {}
    summary = {
        "rounds_completed": int(final.get("round", 0)),
        "student_accuracy": final.get("student_accuracy", float("nan")),
        **final_val(final),
        "stopped": stopped,
        "seconds": round(time.monotonic() - t_start, 2),
        **strategy.mechanism.epsilons(),
    }
    failing = strategy.failing_clients()
    if failing:
        # A run some clients never answered is not a success: the CLI exits 3.
        summary["status"] = "clients_failed"
        summary["failed_clients"] = failing
        logger.error("%s", failed_clients_line(failing))
    return summary


def failed_clients_line(failing: dict[str, dict[str, Any]]) -> str:
    """One line naming the clients that failed every round they were asked, and why."""
    ids = ", ".join(failing)
    first = next(iter(failing.values()))
    return (
        f"{len(failing)} client(s) failed every round they were asked: {ids}; "
        f"first reason: {first['reason']}"
    )
