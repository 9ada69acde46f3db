"""``flwr run .`` as the README writes it, on Flower's local simulation runtime.

The slow tests run the README's ``flwr run`` line, copied from README.md at test time, in
a copy of the app (so results land in the copy, not in the repository), under their own
``FLWR_HOME`` and ports; then the README's stop line, and check that no Flower process of
theirs is left.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fedkd.server.flwr_federation import FederationSizeError, check_simulation_size, fix_command

ROOT = Path(__file__).resolve().parents[1]


def _readme_line(pattern: str) -> str:
    """The one README line matching ``pattern``."""
    lines = [ln for ln in (ROOT / "README.md").read_text().splitlines() if re.match(pattern, ln)]
    assert len(lines) == 1, f"README: expected one line matching {pattern!r}, got {lines}"
    return lines[0]


def readme_run_line() -> str:
    """The README's ``flwr run`` command."""
    return _readme_line(r"^(\w+=\S+ )*flwr run \.")


def readme_stop_line() -> str:
    """The README's command that stops the local SuperLink."""
    return _readme_line(r"^python -m fedkd\.server\.flwr_federation stop")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes_of(home: Path) -> list[str]:
    """Live (non-zombie) processes whose environment has ``FLWR_HOME=home``."""
    marker = f"FLWR_HOME={home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            argv = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if state != "Z":
            found.append(f"{entry.name}: {argv[:200]}")
    return found


@pytest.fixture
def flwr_app(tmp_path):
    """A copy of the app, an environment for it, and the README's lines run there."""
    app = tmp_path / "app"
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, files):
        src = ROOT / name.decode()
        if src.is_file():
            dst = app / name.decode()
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(src.read_bytes())
    home = tmp_path / "flwr-home"
    env = dict(
        os.environ,
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        FLWR_HOME=str(home),
        FLWR_TELEMETRY_ENABLED="0",
        FLWR_DISABLE_UPDATE_CHECK="1",
        HF_HUB_OFFLINE="1",
        FLWR_LOCAL_SUPERLINK_HTTP_API_PORT=str(_free_port()),
        FLWR_LOCAL_CONTROL_API_PORT=str(_free_port()),
    )
    env.pop("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", None)  # the README line sets it

    def sh(line: str, timeout: float) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", "-c", line], cwd=app, env=env, capture_output=True, text=True, timeout=timeout
        )

    try:
        yield app, home, sh
    finally:
        stop = sh(readme_stop_line(), 60)
        assert stop.returncode == 0, stop.stdout + stop.stderr
        deadline = time.monotonic() + 15
        while _processes_of(home) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not _processes_of(home), _processes_of(home)
        # Flower must not have rewritten the pyproject (no federations section to migrate).
        for root in (ROOT, app):
            assert "CONFIGURATION MIGRATION" not in (root / "pyproject.toml").read_text()


@pytest.mark.slow
def test_readme_flwr_run_line(flwr_app):
    """The README's line runs the quickstart: fedkd's round lines, the results folder last."""
    app, _, sh = flwr_app
    t0 = time.monotonic()
    proc = sh(readme_run_line(), 400)
    wall = time.monotonic() - t0
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    out = app / "runs" / "flwr-run"
    summary = json.loads((out / "DONE").read_text())
    assert summary["rounds_completed"] == 20, log[-3000:]
    rows = json.loads((out / "metrics.json").read_text())["rounds"]
    assert [r["clients"] for r in rows] == [10] * 20
    rounds = re.findall(r"fedkd round (\d+)/20 ", log)
    assert rounds == [str(r) for r in range(1, 21)], log[-3000:]
    fedkd_lines = [ln for ln in log.splitlines() if ": fedkd " in ln]
    assert fedkd_lines[-1].endswith(f"results in {out}"), fedkd_lines[-3:]
    print(f"README flwr run line: {wall:.1f} s wall")


@pytest.mark.slow
def test_too_few_supernodes_fails_fast(flwr_app):
    """Flower's default 2 SuperNodes for 10 clients: one line naming the fix, in seconds."""
    app, _, sh = flwr_app
    line = readme_run_line()
    assert ' --federation-config "num-supernodes=10"' in line
    t0 = time.monotonic()
    proc = sh(line.replace(' --federation-config "num-supernodes=10"', ""), 120)
    wall = time.monotonic() - t0
    log = proc.stdout + proc.stderr
    errors = [ln for ln in log.splitlines() if ln.startswith("ERROR   : fedkd ")]
    assert len(errors) == 1, log[-3000:]
    assert "has 2 SuperNodes but clients.num_clients=10" in errors[0]
    assert errors[0].endswith(f"run `{fix_command(10)}`")
    assert fix_command(10) in line  # the fix it names is the README's line
    assert not (app / "runs").exists()  # nothing written
    assert wall < 90, wall
    print(f"too few SuperNodes: failed after {wall:.1f} s wall")


def test_check_simulation_size():
    """A settled count below ``want`` fails at once; one that reaches ``want`` returns."""
    t0 = time.monotonic()
    with pytest.raises(FederationSizeError, match="has 2 SuperNodes but clients.num_clients=10"):
        check_simulation_size(lambda: 2, 10, wait=30, settle=0.3, poll=0.05)
    assert time.monotonic() - t0 < 5
    counts = iter([0, 0, 4, 10])
    assert check_simulation_size(lambda: next(counts), 10, wait=30, settle=5, poll=0.01) == 10
    with pytest.raises(FederationSizeError, match="has 0 SuperNodes"):
        check_simulation_size(lambda: 0, 3, wait=0.2, settle=0.05, poll=0.05)
    fix = shlex.split(fix_command(3))
    assert fix[-3:] == ["--federation-config", "num-supernodes=3", "--stream"]
