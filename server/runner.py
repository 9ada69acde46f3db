"""Drive a whole fedkd run on any Flower ``Grid``: resume, rounds, checkpoints, results."""

from __future__ import annotations

import logging
import time
from typing import Any

from flwr.app import ArrayRecord
from flwr.serverapp import Grid

from fedkd.clientdata import splits_for
from fedkd.config import Config
from fedkd.mechanisms import CentralMechanism, RunStopped
from fedkd.plots import plot_run
from fedkd.rundir import RunDir
from fedkd.student import Student
from fedkd.teacher import TeacherCache
from fedkd.validation import final_val
from server.strategy import DistillStrategy

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
    splits = splits_for(cfg.data, cfg.seed)
    student = Student(
        cfg, tuple(splits.input_shape), int(splits.num_classes), x_public=splits.x_proxy
    )
    cache = TeacherCache.empty(len(splits.x_proxy), int(splits.num_classes))
    mechanism = CentralMechanism(
        cfg, num_examples=len(splits.y_private), num_proxy=len(splits.x_proxy)
    )
    rows: list[dict[str, Any]] = []
    teacher = ArrayRecord()
    done = 0
    ckpt = run.load_checkpoint()
    if ckpt is not None:
        done = int(ckpt["round"])
        student.load_state_dict(ckpt["student"])
        cache.probs[:], cache.labelled[:] = ckpt["cache_probs"], ckpt["cache_labelled"]
        mechanism.load_state_dict(ckpt["mechanism"])
        rows = list(ckpt["rows"])
        teacher = ckpt["teacher"]
        logger.info("resuming %s after round %d", run.path, done)

    t_start = time.monotonic()

    def on_round(row: dict[str, Any]) -> None:
        rows.append(row)
        run.write_metrics(rows, {"ledger": mechanism.ledger_dict()})
        run.write_student(student.model.state_dict(), student.meta)
        mechanism.save_ledger(run.path)
        run.save_checkpoint(
            {
                "round": row["round"],
                "student": student.state_dict(),
                "cache_probs": cache.probs.copy(),
                "cache_labelled": cache.labelled.copy(),
                "mechanism": mechanism.state_dict(),
                "rows": rows,
                "teacher": strategy.last_teacher,
                "client_failures": strategy.failures,
            }
        )
        logger.info(
            "round %d/%d  student acc %.4f  teacher acc %.4f  up %s B  down %s B  "
            "clients %s  %ss%s",
            row["round"],
            cfg.rounds,
            row["student_accuracy"],
            row["teacher_accuracy"],
            _shown(row["bytes_up"]),
            _shown(row["bytes_down"]),
            _shown(row["clients"]),
            _shown(None if row["seconds"] is None else f"{row['seconds']:.1f}"),
            mechanism.describe(row),
        )

    strategy = DistillStrategy(
        cfg, splits, mechanism, student, cache, on_round, first_round=done, state_dir=state_dir
    )
    strategy.last_teacher = teacher
    if ckpt is not None:
        strategy.failures = dict(ckpt.get("client_failures", {}))
    stopped = None
    if done < cfg.rounds:
        try:
            strategy.start(
                grid,
                teacher,
                num_rounds=cfg.rounds - done,
                timeout=cfg.runtime.round_timeout,
                evaluate_fn=strategy.evaluate,
            )
        except RunStopped as stop:
            stopped = str(stop)
            logger.warning("%s", stop)
    final = rows[-1] if rows else {}
    summary = {
        "rounds_completed": int(final.get("round", 0)),
        "student_accuracy": final.get("student_accuracy", float("nan")),
        **final_val(final),
        "stopped": stopped,
        "seconds": round(time.monotonic() - t_start, 2),
        **mechanism.epsilons(),
    }
    failing = strategy.failing_clients()
    if failing:
        # A run some clients never answered is not a success: the CLI exits 3.
        summary["status"] = "clients_failed"
        summary["failed_clients"] = failing
        logger.error("%s", failed_clients_line(failing))
    if rows:
        plot_run(rows, run.path / "metrics.png")
    run.mark_done(summary)
    return summary


def failed_clients_line(failing: dict[str, dict[str, Any]]) -> str:
    """One line naming the clients that failed every round they were asked, and why."""
    ids = ", ".join(failing)
    first = next(iter(failing.values()))
    return (
        f"{len(failing)} client(s) failed every round they were asked: {ids}; "
        f"first reason: {first['reason']}"
    )


def _shown(value: Any) -> str:
    return "(withheld)" if value is None else str(value)
