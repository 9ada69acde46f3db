"""The fedkd command: user mistakes give one line and exit 2; Flower's Ray runtime end to end."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from simulations.cli import main

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "simulations" / "configs" / "quickstart.yaml"


@pytest.mark.parametrize(
    ("sets", "needle"),
    [
        (["distill.tempreature=2"], "unknown config key 'distill.tempreature'"),
        (["rounds=ten"], "'rounds' must be an integer"),
        (["data.alpha=0"], "data.alpha must be > 0"),
        (["clients.num_clients=5000"], "clients.num_clients=5000 exceeds"),
        (["data.source=idx:/nonexistent/dir"], "/nonexistent/dir"),
        (["clients.models=[resnet]"], "unknown model 'resnet'"),
        (
            ["distill.augment=false", "distill.public_features=5000"],
            "distill.public_features=5000 must be between",
        ),
        (
            ["distill.augment=false", "distill.feature_map=scattering"],
            "distill.feature_map=scattering: model 'cnn'",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, sets, needle):
    argv = ["simulate", str(QUICKSTART), "--out", str(tmp_path / "run")]
    for s in sets:
        argv += ["--set", s]
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert needle in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_npz_without_the_four_arrays_is_named(tmp_path, capsys):
    path = tmp_path / "bad.npz"
    np.savez(path, x_train=np.zeros((4, 2)), y_train=np.zeros(4, int))
    code = main(
        [
            "simulate",
            str(QUICKSTART),
            "--out",
            str(tmp_path / "r"),
            "--set",
            f"data.source=npz:{path}",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "bad.npz" in err and "x_test" in err


def test_missing_config_file_and_bad_resume(tmp_path, capsys):
    assert main(["simulate", str(tmp_path / "none.yaml")]) == 2
    assert main(["simulate", "--resume", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "config file not found" in err and "not a fedkd run directory" in err


@pytest.mark.slow
def test_ray_simulation_three_clients_two_rounds_leaves_nothing_running(tmp_path):
    pattern = "raylet|gcs_server|flower-superlink"
    before = set(
        subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split()
    )
    out = tmp_path / "ray"
    cmd = [
        sys.executable,
        "-m",
        "simulations.cli",
        "simulate",
        str(QUICKSTART),
        "--out",
        str(out),
        "--set",
        "rounds=2",
        "--set",
        "clients.num_clients=3",
        "--set",
        "clients.local_epochs=1",
        "--set",
        "distill.epochs=2",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "final student accuracy" in proc.stdout
    rows = json.loads((out / "metrics.json").read_text())["rounds"]
    assert [r["round"] for r in rows] == [1, 2] and all(r["clients"] == 3 for r in rows)
    # Processes that this run started and left behind (others on the machine are not ours).
    leftover: set[str] = set()
    for _ in range(40):
        now = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
        leftover = set(now.stdout.split()) - before
        if not leftover:
            break
        time.sleep(0.5)
    assert leftover == set()
