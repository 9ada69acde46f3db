"""Ctrl-C during a Ray simulation: a short message naming the directory, then it resumes.

The interrupt is sent to the whole process group, as a terminal does. Flower's multi-line
``run_simulation`` deprecation notice is not in the default output either.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fedkd.simulations.runner import RunSimulationNoticeFilter

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "simulations" / "configs" / "quickstart.yaml"
SETS = ["rounds=2", "clients.num_clients=3", "clients.local_epochs=1", "distill.epochs=2"]


def _wait_for(path: Path, needle: str, proc: subprocess.Popen, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        if needle in path.read_text(errors="replace"):
            return
        time.sleep(0.05)
    raise AssertionError(f"{needle!r} never printed:\n{path.read_text(errors='replace')}")


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
def test_ctrl_c_in_round_one_prints_the_resume_command_and_no_traceback(tmp_path):
    out, log = tmp_path / "run", tmp_path / "output.txt"
    sets = [a for s in SETS for a in ("--set", s)]
    cmd = [
        sys.executable,
        "-m",
        "fedkd.simulations.cli",
        "simulate",
        str(QUICKSTART),
        "--out",
        str(out),
    ]
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [*cmd, *sets],
            cwd=ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # A suite started in the background inherits SIGINT ignored (as a shell's
            # background job does), and Python then keeps it ignored: restore it, as a
            # terminal's foreground process has it.
            preexec_fn=_default_sigint,
        )
        try:
            _wait_for(log, "clients ready", proc, 300)  # round 1 has just been sent out
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    text = log.read_text()
    assert proc.returncode == 130, text
    assert "Traceback" not in text and "ActorDiedError" not in text, text
    assert "DEPRECATED FEATURE" not in text, text
    after = text[text.index("clients ready") :].splitlines()[1:]
    assert len(after) <= 3, text  # our note, an optional round line, the resume line
    assert after[-1] == (
        f"fedkd: interrupted; finished rounds are kept: continue with "
        f"`fedkd simulate --resume {out}`"
    )
    assert not (out / "DONE").exists()
    resumed = subprocess.run(
        [sys.executable, "-m", "fedkd.simulations.cli", "simulate", "--resume", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "final student accuracy" in resumed.stdout
    rows = json.loads((out / "metrics.json").read_text())["rounds"]
    assert [r["round"] for r in rows] == [1, 2]


def _record(msg: str, *args: object, name: str = "flwr") -> logging.LogRecord:
    return logging.LogRecord(name, logging.WARNING, __file__, 1, msg, args, None)


def test_the_notice_filter_drops_only_the_run_simulation_notice():
    notice = "DEPRECATED FEATURE: %s\n\n    This is a deprecated feature."
    keep = RunSimulationNoticeFilter().filter
    assert not keep(_record(notice, "The `run_simulation` function is deprecated and will go"))
    assert keep(_record(notice, "Passing `enable_tf_gpu_growth=True` is deprecated."))
    assert keep(_record("The `run_simulation` function is deprecated"))  # not the notice
    assert keep(_record("round %d failed", 3))


def test_the_notice_filter_is_on_the_flwr_logger_only_without_verbose(monkeypatch):
    from fedkd.simulations.runner import _quiet_flower

    monkeypatch.delenv("FLWR_LOG_LEVEL", raising=False)
    flwr_logger = logging.getLogger("flwr")
    has_filter = lambda: any(  # noqa: E731
        isinstance(f, RunSimulationNoticeFilter) for f in flwr_logger.filters
    )
    with _quiet_flower(verbose=False):
        assert has_filter()
        assert os.environ["FLWR_LOG_LEVEL"] == "ERROR"  # inherited by the Ray workers
    assert not has_filter() and "FLWR_LOG_LEVEL" not in os.environ
    with _quiet_flower(verbose=True):
        assert not has_filter() and "FLWR_LOG_LEVEL" not in os.environ
    monkeypatch.setenv("FLWR_LOG_LEVEL", "INFO")
    with _quiet_flower(verbose=False):
        assert os.environ["FLWR_LOG_LEVEL"] == "INFO"  # the user's choice stands
