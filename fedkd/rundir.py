"""The run directory: resolved config, metrics, checkpoint, ledger, plots.

Every file is written atomically, so a run killed at any point leaves either the previous
or the new version of each file. ``checkpoint.pt`` is written last in a round and is the
single commit point: a resume trusts it and rewrites the metrics files from it.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from fedkd.atomic import write_bytes, write_json, write_text
from fedkd.config import Config, ConfigError, from_dict, to_dict

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
CHECKPOINT = "checkpoint.pt"
METRICS_CSV = "metrics.csv"
METRICS_JSON = "metrics.json"
LEDGER = "ledger.json"
STUDENT = "student.pt"
DONE = "DONE"

CSV_COLUMNS = (
    "round",
    "student_accuracy",
    "student_loss",
    "teacher_accuracy",
    "bytes_up",
    "bytes_down",
    "clients",
    "dropped",
    "epsilon_example",
    "epsilon_client",
    "seconds",
)


def _csv_columns(rows: list[dict[str, Any]]) -> tuple[str, ...]:
    """:data:`CSV_COLUMNS`, with ``student_val_accuracy`` after ``student_accuracy`` when a
    row has it (a run with a validation split)."""
    if not any("student_val_accuracy" in row for row in rows):
        return CSV_COLUMNS
    at = CSV_COLUMNS.index("student_accuracy") + 1
    return (*CSV_COLUMNS[:at], "student_val_accuracy", *CSV_COLUMNS[at:])


class RunDirError(ValueError):
    """A run directory that cannot be used as asked (the message says why)."""


class RunFinished(RunDirError):  # noqa: N818 - a finished run, an error only where unexpected
    """The folder already holds a finished run of the same config.

    Parameters
    ----------
    message : str
        What to do instead (one line).
    summary : dict
        The finished run's summary, as in its ``DONE``.
    """

    def __init__(self, message: str, summary: dict[str, Any]) -> None:
        super().__init__(message)
        self.summary = summary


@dataclass(frozen=True)
class RunDir:
    """Paths and writers of one run's output folder."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    # -- config ---------------------------------------------------------------------------
    def write_config(self, cfg: Config) -> None:
        """Save the resolved config (every default spelled out)."""
        write_text(self.path / CONFIG_FILE, yaml.safe_dump(to_dict(cfg), sort_keys=False))

    def read_config(self) -> Config:
        """The resolved config of an existing run."""
        path = self.path / CONFIG_FILE
        if not path.is_file():
            raise RunDirError(f"{self.path} is not a fedkd run directory (no {CONFIG_FILE})")
        try:
            return from_dict(yaml.safe_load(path.read_text()) or {})
        except (yaml.YAMLError, ConfigError) as err:
            raise RunDirError(f"{path} is damaged: {err}") from err

    # -- checkpoint -----------------------------------------------------------------------
    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """Commit a completed round: one atomic ``torch.save`` of the whole server state."""
        buf = io.BytesIO()
        torch.save(state, buf)
        write_bytes(self.path / CHECKPOINT, buf.getvalue())

    def load_checkpoint(self) -> dict[str, Any] | None:
        """The last committed server state, or None for a run that finished no round."""
        path = self.path / CHECKPOINT
        if not path.exists():
            return None
        try:
            return torch.load(path, weights_only=False)
        except Exception as err:  # noqa: BLE001 - any unreadable checkpoint is the same error
            raise RunDirError(f"{path} is damaged ({type(err).__name__}); cannot resume") from err

    # -- results --------------------------------------------------------------------------
    def write_metrics(self, rows: list[dict[str, Any]], extra: dict[str, Any]) -> None:
        """Rewrite ``metrics.csv`` and ``metrics.json`` from all rows so far."""
        columns = _csv_columns(rows)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in columns})
        write_text(self.path / METRICS_CSV, buf.getvalue())
        write_json(self.path / METRICS_JSON, {"rounds": rows, **extra})

    def write_student(self, state_dict: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        """The student checkpoint: weights plus what is needed to rebuild the model."""
        buf = io.BytesIO()
        torch.save({"state_dict": state_dict, **meta}, buf)
        write_bytes(self.path / STUDENT, buf.getvalue())

    def mark_done(self, summary: dict[str, Any]) -> None:
        """Mark the run finished; written after everything else."""
        write_json(self.path / DONE, summary)

    def is_done(self) -> bool:
        """Whether the run finished (all rounds, or a clean budget stop)."""
        return (self.path / DONE).exists()

    def read_done(self) -> dict[str, Any]:
        """The summary a finished run wrote to ``DONE``."""
        try:
            return json.loads((self.path / DONE).read_text())
        except (OSError, ValueError) as err:
            raise RunDirError(f"{self.path / DONE} is damaged ({type(err).__name__})") from err

    def read_metrics(self) -> list[dict[str, Any]]:
        """Rows of ``metrics.json`` ([] when absent)."""
        path = self.path / METRICS_JSON
        if not path.exists():
            return []
        return json.loads(path.read_text())["rounds"]


def check_fresh(out: str | Path, cfg: Config) -> None:
    """Check that a new run of ``cfg`` may start in ``out``; nothing is written.

    An absent or empty folder may be used, and so may one holding only a ``config.yaml``
    (a start that failed before its first round wrote nothing else).

    Raises
    ------
    RunFinished
        ``out`` holds a finished run of the same config (its summary attached).
    RunDirError
        ``out`` is a file, or holds other files; the message names the command to use.
    """
    run = RunDir(Path(out))
    if not run.path.exists():
        return
    if not run.path.is_dir():
        raise RunDirError(f"{run.path} is a file, not a run directory; pick another --out")
    names = sorted(p.name for p in run.path.iterdir())
    if names in ([], [CONFIG_FILE]):
        return
    if CONFIG_FILE not in names:
        raise RunDirError(f"{run.path} is not empty and holds no fedkd run; pick another --out")
    try:
        same = to_dict(run.read_config()) == to_dict(cfg)
    except RunDirError:
        same = False
    if same and run.is_done():
        raise RunFinished(
            f"{run.path} already holds this run, finished; pass --out DIR for a new one",
            run.read_done(),
        )
    if same:
        raise RunDirError(
            f"{run.path} holds an unfinished run of this config; continue it with "
            f"`fedkd simulate --resume {run.path}`, or pass --out DIR for a new run"
        )
    raise RunDirError(
        f"{run.path} holds a run of another config; pass --out DIR for a new run "
        f"(or `fedkd simulate --resume {run.path}` to continue that one)"
    )


def prepare(out: str | Path, cfg: Config, *, resume: bool) -> RunDir:
    """Create a fresh run directory, or check an existing one for resuming.

    A fresh run refuses a folder that already holds a run (no silent overwrite, see
    :func:`check_fresh`) but reuses one where an earlier start wrote only its config; a
    resume refuses a folder whose saved config differs from ``cfg``.
    """
    run = RunDir(Path(out))
    if resume:
        if not (run.path / CONFIG_FILE).exists():
            raise RunDirError(f"cannot resume: {run.path} holds no fedkd run")
        if to_dict(run.read_config()) != to_dict(cfg):
            raise RunDirError(
                f"cannot resume: {run.path / CONFIG_FILE} differs from the requested config"
            )
        return run
    check_fresh(run.path, cfg)
    if (run.path / CONFIG_FILE).exists():
        logger.info("reusing %s: an earlier start wrote only its config", run.path)
    run.path.mkdir(parents=True, exist_ok=True)
    run.write_config(cfg)
    return run
