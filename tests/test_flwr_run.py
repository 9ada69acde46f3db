"""``flwr run .`` runs the same ServerApp/ClientApp on Flower's local simulation runtime."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_flwr_run_simulation_writes_a_run(tmp_path):
    home = tmp_path / "flwr-home"
    env = dict(
        os.environ,
        FLWR_HOME=str(home),
        FLWR_TELEMETRY_ENABLED="0",
        FLWR_DISABLE_UPDATE_CHECK="1",
        FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
        FLWR_LOCAL_SUPERLINK_HTTP_API_PORT=str(_free_port()),
        FLWR_LOCAL_CONTROL_API_PORT=str(_free_port()),
    )
    out = tmp_path / "run"
    flwr = Path(sys.executable).parent / "flwr"
    cmd = [
        str(flwr),
        "run",
        ".",
        "--stream",
        "--federation-config",
        "num-supernodes=3 client-resources-num-cpus=1",
        "--run-config",
        f"out-dir='{out}' overrides='rounds=2;clients.num_clients=3;"
        "clients.local_epochs=1;distill.epochs=2'",
    ]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        summary = json.loads((out / "DONE").read_text())
        assert summary["rounds_completed"] == 2
        rows = json.loads((out / "metrics.json").read_text())["rounds"]
        assert [r["clients"] for r in rows] == [3, 3]
    finally:
        # flwr run leaves its local SuperLink running: stop the one under this FLWR_HOME.
        found = subprocess.run(
            ["pgrep", "-f", f"flower-superlink.*{home}"], capture_output=True, text=True
        )
        for pid in found.stdout.split():
            os.kill(int(pid), signal.SIGTERM)
    # The pyproject must not have been rewritten (no federations section to migrate).
    assert "CONFIGURATION MIGRATION" not in (ROOT / "pyproject.toml").read_text()
