"""A server killed with SIGKILL mid-run resumes to the same model and an ε that can only be
higher: a round in flight at the kill may have been trained (and its replies seen) before
the re-run trains it again, and both are charged."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "simulations" / "configs" / "quickstart.yaml"
SETS = [
    "runtime.backend=inprocess",
    "rounds=4",
    "clients.num_clients=4",
    "clients.local_epochs=1",
    "distill.epochs=2",
    "privacy.mechanisms=[dpsgd]",
    "privacy.dpsgd.noise_multiplier=1.0",
    "privacy.delta=1e-3",
    # Two DP runs compared bit for bit need repeatable DP noise (test-only; the device's
    # floor must allow it, and every ε is then marked as no guarantee).
    "privacy.insecure_seeded_noise=true",
    "device.allow_insecure_noise=true",
]
KEYS = (
    "round",
    "student_accuracy",
    "student_loss",
    "teacher_accuracy",
    "bytes_up",
    "bytes_down",
    "clients",
    "epsilon_example",
)


def _cmd(*extra: str) -> list[str]:
    cmd = [sys.executable, "-m", "fedkd.simulations.cli", "simulate", *extra]
    return cmd


def _rows(run: Path) -> list[dict]:
    return [
        {k: r[k] for k in KEYS} for r in json.loads((run / "metrics.json").read_text())["rounds"]
    ]


def _steps(releases: list[dict], cid: int) -> int:
    return sum(r["steps"] for r in releases if r["subject"] == f"client-{cid}")


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
    sets = [a for s in SETS for a in ("--set", s)]
    # Equal-length names: the state-dir path travels in each message, so in bytes_down.
    full, crashed = tmp_path / "full", tmp_path / "kill"
    subprocess.run(
        _cmd(str(QUICKSTART), "--out", str(full), *sets),
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=600,
    )
    proc = subprocess.Popen(
        _cmd(str(QUICKSTART), "--out", str(crashed), *sets),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            ckpt = crashed / "metrics.json"
            if ckpt.exists() and len(json.loads(ckpt.read_text())["rounds"]) >= 2:
                break
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not (crashed / "DONE").exists()
    done_before = len(_rows(crashed))
    assert 2 <= done_before < 4
    subprocess.run(
        _cmd("--resume", str(crashed)), cwd=ROOT, check=True, capture_output=True, timeout=600
    )
    crashed_rows, full_rows = _rows(crashed), _rows(full)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "epsilon_example"} for r in rows]  # noqa: E731
    assert strip(crashed_rows) == strip(full_rows)  # the same model, round by round
    for a, b in zip(crashed_rows, full_rows, strict=True):
        assert a["epsilon_example"] >= b["epsilon_example"] - 1e-12  # never lower
    ledger = lambda p: json.loads((p / "ledger.json").read_text())["releases"]  # noqa: E731
    full_ledger, crashed_ledger = ledger(full), ledger(crashed)
    assert len(full_ledger) == 4 * 4
    assert all(r in crashed_ledger for r in full_ledger)  # every charge of the clean run
    assert all(r["seeded"] for r in crashed_ledger)
    for cid in range(4):
        assert _steps(crashed_ledger, cid) >= _steps(full_ledger, cid)


def test_damaged_checkpoint_is_reported_not_used(tmp_path):
    from fedkd.simulations.runner import simulate

    from fedkd.config import from_dict
    from fedkd.rundir import RunDirError

    cfg = from_dict(
        {
            "rounds": 1,
            "clients": {"num_clients": 3, "local_epochs": 1},
            "distill": {"epochs": 1},
            "runtime": {"backend": "inprocess"},
        }
    )
    simulate(cfg, tmp_path / "r")
    (tmp_path / "r" / "checkpoint.pt").write_bytes(b"half-written")
    (tmp_path / "r" / "DONE").unlink()
    with pytest.raises(RunDirError, match="damaged"):
        simulate(cfg, tmp_path / "r", resume=True)
