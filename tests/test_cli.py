"""The fedkd command: user mistakes give one line and exit 2; Flower's Ray runtime end to end."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from fedkd.simulations.cli import main

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
@pytest.mark.ray
def test_ray_simulation_three_clients_two_rounds_leaves_nothing_running(tmp_path):
    pattern = "raylet|gcs_server|flower-superlink"
    before = set(
        subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split()
    )
    out = tmp_path / "ray"
    cmd = [
        sys.executable,
        "-m",
        "fedkd.simulations.cli",
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


TINY = """\
rounds: 1
clients: {num_clients: 3, local_epochs: 1, models: [mlp]}
distill: {student: mlp, epochs: 1, proxy_per_round: 30}
runtime: {backend: inprocess}
"""


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A one-round config in ``tmp_path/tiny.yaml``, run from ``tmp_path`` (runs/tiny)."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path


@pytest.mark.parametrize("sets", [["distill.codec=int9"], ["distill.aggregation=foo"]])
def test_a_bad_name_fails_before_any_run_directory_exists(tiny, capsys, sets):
    argv = ["simulate", str(tiny)]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "choose from" in err
    assert not (tiny.parent / "runs").exists()


def test_a_start_that_crashed_before_round_one_does_not_block_the_rerun(tiny, monkeypatch):
    import fedkd.simulations.runner

    def crash(*args, **kwargs):
        raise RuntimeError("the runtime failed to start")

    monkeypatch.setattr(fedkd.simulations.runner, "_simulate_inprocess", crash)
    with pytest.raises(RuntimeError):
        main(["simulate", str(tiny)])
    out = tiny.parent / "runs" / "tiny"
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml"]
    monkeypatch.undo()
    monkeypatch.chdir(tiny.parent)
    assert main(["simulate", str(tiny), "--set", "seed=5"]) == 0  # a fixed value: same folder
    assert (out / "DONE").exists()


def test_rerunning_a_finished_command_prints_its_summary_and_leaves_done_alone(tiny, capsys):
    def last_line() -> tuple[str, str]:  # the summary; logs come before it (on stdout or stderr)
        captured = capsys.readouterr()
        return captured.out.strip().splitlines()[-1], captured.out + captured.err

    assert main(["simulate", str(tiny)]) == 0
    first, _ = last_line()
    assert first.startswith("final student accuracy")
    done = tiny.parent / "runs" / "tiny" / "DONE"
    before = done.read_bytes()
    assert main(["simulate", str(tiny)]) == 0  # the README one-liner, twice
    again, text = last_line()
    assert again == first
    assert "already holds this run, finished; pass --out DIR" in " ".join(text.split())
    assert main(["simulate", "--resume", "runs/tiny"]) == 0
    assert last_line()[0] == first
    assert done.read_bytes() == before  # not rewritten with the seconds of a no-op
    assert json.loads(before)["seconds"] > 0


def test_a_rerun_with_another_config_names_the_way_out(tiny, capsys):
    assert main(["simulate", str(tiny)]) == 0
    capsys.readouterr()
    assert main(["simulate", str(tiny), "--set", "seed=7"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "another config; pass --out DIR" in err and "--resume runs/tiny" in err


@pytest.mark.parametrize(
    "extra", [["CONFIG"], ["--set", "rounds=3"], ["--out", "elsewhere"]], ids=str
)
def test_resume_with_a_config_set_or_out_is_refused_in_one_line(tiny, capsys, extra):
    extra = [str(tiny) if e == "CONFIG" else e for e in extra]
    assert main(["simulate", "--resume", "runs/tiny", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--resume continues runs/tiny with its saved" in err


def test_out_naming_an_existing_file_is_one_line(tiny, capsys):
    (tiny.parent / "results.txt").write_text("mine")
    assert main(["simulate", str(tiny), "--out", "results.txt"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "fedkd: error: results.txt is a file, not a run directory; pick another --out"
    assert (tiny.parent / "results.txt").read_text() == "mine"


def test_a_client_failing_every_round_makes_the_run_exit_3_naming_it(tiny, capsys, monkeypatch):
    import fedkd.client.app

    real = fedkd.client.app.local_round

    def broken_on_client_1(cfg, data, cid, *args, **kwargs):
        if cid == 1:
            raise OSError("disk full")
        return real(cfg, data, cid, *args, **kwargs)

    monkeypatch.setattr(fedkd.client.app, "local_round", broken_on_client_1)
    assert main(["simulate", str(tiny), "--set", "rounds=2"]) == 3
    err = capsys.readouterr().err
    line = "fedkd: error: 1 client(s) failed every round they were asked: 1; first reason: node 1:"
    assert line in err
    done = json.loads((tiny.parent / "runs" / "tiny" / "DONE").read_text())
    assert done["status"] == "clients_failed" and done["rounds_completed"] == 2
    assert done["failed_clients"] == {
        "1": {"rounds": 2, "reason": "node 1: the round failed (details in the device's own log)"}
    }
    assert main(["simulate", str(tiny), "--set", "rounds=2"]) == 3  # the rerun says so too


def test_version_prints_the_installed_package_version_and_exits_0(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"fedkd {version('fedkd')}"


@pytest.mark.parametrize(
    ("where", "expected"),
    [("before", True), ("after", True), ("long-after", True), ("none", False)],
)
def test_verbose_is_accepted_before_or_after_the_sub_command(
    tmp_path, monkeypatch, where, expected
):
    import fedkd.simulations.cli as cli

    seen = []
    monkeypatch.setattr(cli, "_setup_logging", seen.append)
    command = ["simulate", str(tmp_path / "none.yaml")]
    argv = {
        "before": ["-v", *command],
        "after": [*command, "-v"],
        "long-after": [*command, "--verbose"],
        "none": command,
    }[where]
    assert main(argv) == 2  # the config does not exist: past the parser, into the command
    assert seen == [expected]


def test_verbose_after_a_nested_sub_command_parses():
    from fedkd.simulations.cli import build_parser

    args = build_parser().parse_args(["keys", "ca", "--out", "x", "-v"])
    assert args.verbose is True


def test_top_level_help_is_plain_text_not_rest(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "``" not in out and ":func:" not in out and ":mod:" not in out
    assert "Federated knowledge distillation" in out and "--version" in out


@pytest.mark.parametrize("written", [True, False])
def test_ctrl_c_names_the_run_directory_to_resume_if_anything_was_written(
    tiny, capsys, monkeypatch, written
):
    import fedkd.simulations.runner

    def interrupted(cfg, out, *, resume=False):
        if written:
            out.mkdir(parents=True)
            (out / "config.yaml").write_text("rounds: 1\n")
        raise KeyboardInterrupt

    monkeypatch.setattr(fedkd.simulations.runner, "simulate", interrupted)
    out = tiny.parent / "my run"
    assert main(["simulate", str(tiny), "--out", str(out)]) == 130
    err = capsys.readouterr().err
    if written:
        hint = f"continue with `fedkd simulate --resume '{out}'`"
        assert err == f"fedkd: interrupted; finished rounds are kept: {hint}\n"
    else:
        assert err == "fedkd: interrupted\n"  # nothing to resume
