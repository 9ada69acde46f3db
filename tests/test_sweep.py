"""``fedkd sweep``: grid expansion, resume logic, results.csv schema, the command line."""

from __future__ import annotations

import csv
import json
import math
import os

import fedkd.simulations.sweep as sweep
import pytest
import yaml
from fedkd.simulations.sweep import RESULT_COLUMNS, cell_name, expand, parse_spec, run_sweep

from fedkd.config import ConfigError
from fedkd.rundir import RunDir

BASE = {
    "seed": 0,
    "rounds": 1,
    "data": {"source": "digits"},
    "clients": {"num_clients": 3, "local_epochs": 1, "models": ["mlp"]},
    "distill": {"student": "mlp", "proxy_per_round": 20, "epochs": 1},
    "privacy": {"client_delta": 0.1},
    "runtime": {"backend": "inprocess"},
}


def _spec(grid, **extra):
    return parse_spec({"base": BASE, "grid": grid, **extra})


def test_grid_is_the_cartesian_product_in_order():
    cells = expand(_spec({"clients.lr": [0.1, 0.2], "seed": [0, 1, 2]}))
    assert len(cells) == 6
    assert [c.name for c in cells[:2]] == ["clients.lr=0.1__seed=0", "clients.lr=0.1__seed=1"]
    assert {(c.config.clients.lr, c.config.seed) for c in cells} == {
        (lr, s) for lr in (0.1, 0.2) for s in (0, 1, 2)
    }
    assert all(c.method == "fedkd" for c in cells)
    assert [c.name for c in expand(_spec({"clients.lr": [0.1, 0.2], "seed": [0, 1, 2]}))] == [
        c.name for c in cells
    ]  # deterministic


def test_grids_union_set_and_per_method_overrides():
    spec = parse_spec(
        {
            "base": BASE,
            "set": {"rounds": 3},
            "per_method": {"dp-fedavg": {"privacy.gaussian.clip_norm": 7.0}},
            "grids": [
                {
                    "method": ["fedkd"],
                    "privacy.mechanisms": [["dpsgd"], ["gaussian"]],
                    "epsilon": [1, 4],
                },
                {"method": ["central", "fedavg"], "seed": [0]},
                {"method": ["central"], "seed": [0]},  # duplicate cell: kept once
                {"method": ["dp-fedavg"], "epsilon": [2]},
            ],
        }
    )
    cells = expand(spec)
    assert len(cells) == 4 + 2 + 1
    assert all(c.config.rounds == 3 for c in cells)
    by = {c.name: c for c in cells}
    dpsgd = by["method=fedkd__privacy.mechanisms=dpsgd__epsilon=1"].config.privacy
    assert dpsgd.mechanisms == ("dpsgd",) and dpsgd.dpsgd.target_epsilon == 1.0
    g1 = by["method=fedkd__privacy.mechanisms=gaussian__epsilon=1"].config.privacy.gaussian
    g4 = by["method=fedkd__privacy.mechanisms=gaussian__epsilon=4"].config.privacy.gaussian
    assert g1.noise_multiplier > g4.noise_multiplier > 0
    dp = by["method=dp-fedavg__epsilon=2"].config.privacy.gaussian
    assert dp.clip_norm == 7.0 and dp.noise_multiplier > 0


def test_epsilon_inf_is_non_private_and_names_are_safe():
    cells = expand(_spec({"privacy.mechanisms": [["pate"]], "epsilon": [".inf", 2]}))
    assert cells[0].config.privacy.mechanisms == ()
    assert cells[0].name == "privacy.mechanisms=pate__epsilon=inf"
    assert cells[1].config.privacy.pate.sigma > 1
    assert cell_name({"data.source": "idx:/a b/c"}) == "data.source=idx__a_b_c"
    assert len(cell_name({f"k{i}": "x" * 30 for i in range(8)})) <= 120


def test_pate_calibration_refuses_a_share_of_the_proxy_naming_the_key():
    spec = _spec(
        {"privacy.mechanisms": [["pate"]], "epsilon": [2]},
        set={"distill.proxy_per_round": 0.35},
    )
    with pytest.raises(ConfigError, match=r"distill\.proxy_per_round=0\.35 is a share"):
        expand(spec)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"base": BASE}, "grid"),
        ({"base": BASE, "grid": {"seed": []}}, "non-empty list"),
        ({"base": BASE, "grid": {"seed": 1}}, "non-empty list"),
        ({"base": BASE, "grid": {"method": ["fedprox"]}}, "unknown method"),
        ({"base": BASE, "grid": {"clients.lr": [-1.0]}}, "clients.lr"),
        ({"base": BASE, "grid": {"nope.key": [1]}}, "unknown config key"),
        (
            {"base": BASE, "grid": {"epsilon": ["big"]}, "set": {"privacy.mechanisms": ["dpsgd"]}},
            "epsilon",
        ),
        ({"base": "missing.yaml", "grid": {"seed": [0]}}, "not found"),
        ({"base": BASE, "grid": {"seed": [0]}, "oops": 1}, "unknown key"),
    ],
)
def test_user_mistakes_are_config_errors(raw, message):
    with pytest.raises(ConfigError, match=message):
        expand(parse_spec(raw))


@pytest.fixture
def fake_runs(monkeypatch):
    """Replace the real runs by a fast fake that writes a run directory like fedkd's."""
    calls = []

    def fake(cell, path):
        calls.append(cell.name)
        run = RunDir(path)
        path.mkdir(parents=True)
        run.write_config(cell.config)
        acc = 0.5 + 0.1 * cell.config.seed
        rows = [
            {
                "round": r,
                "student_accuracy": acc,
                "bytes_up": 300,
                "bytes_down": 600,
                "bytes_up_per_client": {"1": 100, "2": 100, "3": 100},
                "clients": 3,
            }
            for r in (1, 2)
        ]
        run.write_metrics(rows, {})
        summary = {"rounds_completed": 2, "student_accuracy": acc, "seconds": 0.1}
        if cell.config.privacy.mechanisms:
            summary.update({"epsilon_example": 0.9, "delta_example": 1e-5})
        run.mark_done(summary)
        return summary

    monkeypatch.setattr(sweep, "_run_cell", fake)
    return calls


def test_resume_skips_finished_cells_and_reruns_interrupted_ones(tmp_path, fake_runs):
    spec = _spec({"seed": [0, 1, 2]})
    run_sweep(spec, tmp_path, progress=False, plots=False)
    assert fake_runs == ["seed=0", "seed=1", "seed=2"]
    # Interrupt seed=1: its directory lost DONE mid-run and holds a partial file.
    (tmp_path / "seed=1" / "DONE").unlink()
    (tmp_path / "seed=1" / "partial.tmp").write_text("x")
    fake_runs.clear()
    _, rows = run_sweep(spec, tmp_path, progress=False, plots=False)
    assert fake_runs == ["seed=1"]  # finished cells skipped, the interrupted one rerun
    assert not (tmp_path / "seed=1" / "partial.tmp").exists()
    assert [r["status"] for r in rows] == ["done"] * 3
    fake_runs.clear()
    run_sweep(spec, tmp_path, progress=False, plots=False)
    assert fake_runs == []


def test_a_failing_cell_does_not_stop_the_sweep(tmp_path, monkeypatch):
    def boom(cell, path):
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(sweep, "_run_cell", boom)
    _, rows = run_sweep(_spec({"seed": [0, 1]}), tmp_path, progress=False, plots=False)
    assert [r["status"] for r in rows] == ["missing", "missing"]


def test_results_csv_schema_and_plots(tmp_path, fake_runs):
    spec = parse_spec(
        {
            "base": BASE,
            "grids": [
                {"privacy.mechanisms": [["dpsgd"]], "epsilon": [1, 2], "seed": [0, 1]},
                {"method": ["central"], "seed": [0, 1]},
            ],
        }
    )
    cells, _ = run_sweep(spec, tmp_path, progress=False, plots=True)
    with open(tmp_path / "results.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames
        rows = list(reader)
    assert header == ["cell", "privacy.mechanisms", "epsilon", *RESULT_COLUMNS]
    assert set(RESULT_COLUMNS) <= set(header)
    assert "privacy.mechanisms" in header and "epsilon" in header
    assert len(rows) == len(cells) == 6
    first = rows[0]
    assert first["method"] == "fedkd" and first["mechanism"] == "dpsgd"
    assert float(first["target_epsilon"]) == 1.0 and float(first["epsilon_example"]) == 0.9
    assert float(first["bytes_up"]) == 600 and float(first["bytes_down"]) == 1200
    assert float(first["bytes_up_per_client_round"]) == 100
    assert float(first["bytes_down_per_client_round"]) == 200
    central = [r for r in rows if r["method"] == "central"]
    assert all(r["mechanism"] == "none" and math.isinf(float(r["target_epsilon"])) for r in central)
    assert float(first["wall_seconds"]) >= 0
    for name in (
        "accuracy_vs_epsilon.png",
        "accuracy_vs_round.png",
        "accuracy_vs_uplink_bytes.png",
    ):
        assert (tmp_path / name).stat().st_size > 1000
    cell = json.loads((tmp_path / "method=central__seed=0" / "cell.json").read_text())
    assert cell["method"] == "central" and cell["wall_seconds"] >= 0


def test_cli_sweep_end_to_end_and_errors(tmp_path, capsys):
    from fedkd.simulations.cli import main

    spec = {
        "base": BASE,
        "grids": [{"method": ["central", "fedavg"]}, {"method": ["fedkd"], "seed": [0]}],
    }
    path = tmp_path / "sweep_tiny.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out), "--no-plots"]) == 0
    assert "3/3 cells done" in capsys.readouterr().out
    with open(out / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["status"] for r in rows] == ["done"] * 3
    fedavg = next(r for r in rows if r["method"] == "fedavg")
    fedkd = next(r for r in rows if r["method"] == "fedkd")
    assert (
        float(fedavg["bytes_up_per_client_round"]) > float(fedkd["bytes_up_per_client_round"]) > 0
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"base": BASE, "grid": {"method": ["nope"]}}))
    assert main(["sweep", str(bad), "--out", str(tmp_path / "o2")]) == 2
    assert "unknown method" in capsys.readouterr().err
    (out / "results.csv").unlink()
    assert main(["sweep", str(path), "--out", str(out), "--report-only", "--no-plots"]) == 0
    assert (out / "results.csv").exists() and (out / "results.md").exists()


def test_parallel_cells_give_the_same_results_as_sequential_ones(tmp_path):
    spec = _spec({"method": ["central", "fedkd"], "seed": [0, 1]})
    _, seq = run_sweep(spec, tmp_path / "seq", progress=False, plots=False)
    _, par = run_sweep(spec, tmp_path / "par", progress=False, plots=False, jobs=2)
    assert [r["status"] for r in par] == ["done"] * 4
    assert [r["cell"] for r in par] == [r["cell"] for r in seq]
    assert [r["student_accuracy"] for r in par] == [r["student_accuracy"] for r in seq]
    assert all((tmp_path / "par" / r["cell"] / "cell.json").exists() for r in par)
    # Resuming a parallel sweep with everything finished runs nothing and keeps the rows.
    _, again = run_sweep(spec, tmp_path / "par", progress=False, plots=False, jobs=2)
    assert [r["student_accuracy"] for r in again] == [r["student_accuracy"] for r in par]


def test_jobs_below_one_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="--jobs"):
        run_sweep(_spec({"seed": [0]}), tmp_path, progress=False, plots=False, jobs=0)


def test_a_grid_set_applies_to_its_cells_only_and_stays_out_of_the_names():
    spec = parse_spec(
        {
            "base": BASE,
            "grids": [
                {"seed": [0], "method": ["central"]},
                {"seed": [0], "method": ["fedkd"], "set": {"clients.lr": 0.3}},
            ],
        }
    )
    central, fedkd = expand(spec)
    assert fedkd.name == "seed=0__method=fedkd"
    assert fedkd.config.clients.lr == 0.3
    assert central.config.clients.lr != 0.3


def test_the_same_cell_from_grids_with_different_sets_is_refused():
    spec = parse_spec(
        {
            "base": BASE,
            "grids": [
                {"seed": [0], "set": {"clients.lr": 0.3}},
                {"seed": [0], "set": {"clients.lr": 0.4}},
            ],
        }
    )
    with pytest.raises(ConfigError, match="two grids with different 'set'"):
        expand(spec)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_ctrl_c_in_a_parallel_sweep_stops_the_workers_and_rerunning_resumes(tmp_path, monkeypatch):
    import multiprocessing

    spec = _spec({"method": ["central"], "seed": [0, 1, 2, 3, 4, 5]})
    finished = sweep._Tracker.finished

    def finished_then_ctrl_c(self, cell, summary, wall):
        finished(self, cell, summary, wall)
        raise KeyboardInterrupt  # as if Ctrl-C reached the sweep once the first cell ended

    monkeypatch.setattr(sweep._Tracker, "finished", finished_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec, tmp_path, progress=False, plots=False, jobs=2)
    # The workers are gone. (Their pids, not active_children(): once another test has
    # loaded a library that reaps child processes, multiprocessing cannot see them end.)
    assert [p.pid for p in multiprocessing.active_children() if _process_exists(p.pid)] == []
    done = [c for c in expand(spec) if (tmp_path / c.name / "DONE").exists()]
    assert 1 <= len(done) < 6  # queued cells were cancelled, not run
    monkeypatch.setattr(sweep._Tracker, "finished", finished)
    _, rows = run_sweep(spec, tmp_path, progress=False, plots=False, jobs=2)
    assert [r["status"] for r in rows] == ["done"] * 6


def test_base_path_resolves_beside_the_sweep_file_not_the_working_directory(
    tmp_path, monkeypatch, caplog
):
    from fedkd.simulations.sweep_spec import load_spec

    sweeps = tmp_path / "sweeps"
    sweeps.mkdir()
    (sweeps / "base.yaml").write_text(yaml.safe_dump({**BASE, "rounds": 3}))
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({**BASE, "rounds": 5}))
    (sweeps / "sweep.yaml").write_text(yaml.safe_dump({"base": "base.yaml", "grid": {"seed": [0]}}))
    monkeypatch.chdir(tmp_path)  # a base.yaml here too: the one beside the sweep wins
    assert load_spec(sweeps / "sweep.yaml").base["rounds"] == 3
    monkeypatch.chdir(sweeps.parent.parent)  # started elsewhere: same answer
    assert load_spec(sweeps / "sweep.yaml").base["rounds"] == 3
    # Only the working directory has it: used, with a warning saying so.
    (sweeps / "base.yaml").unlink()
    monkeypatch.chdir(tmp_path)
    with caplog.at_level("WARNING", logger="fedkd.simulations.sweep_spec"):
        assert load_spec(sweeps / "sweep.yaml").base["rounds"] == 5
    assert "not beside the sweep file" in caplog.text
    (tmp_path / "base.yaml").unlink()
    with pytest.raises(ConfigError, match="base config not found: base.yaml"):
        load_spec(sweeps / "sweep.yaml")


def test_committed_sweep_files_find_their_base_from_any_directory(tmp_path, monkeypatch):
    from pathlib import Path

    from fedkd.simulations.sweep_spec import load_spec

    configs = Path(__file__).resolve().parents[1] / "simulations" / "configs"
    monkeypatch.chdir(tmp_path)
    files = sorted(configs.glob("sweep_*.yaml"))
    assert files
    for path in files:
        base = yaml.safe_load(path.read_text())["base"]
        if isinstance(base, str):
            assert (configs / base).is_file(), f"{path.name}: base {base} is not beside it"
        assert load_spec(path).base, path.name


def _figures_of_plot_sweep(out, rows, monkeypatch):
    """Run ``plot_sweep`` and keep its figures (by file name) instead of only the PNGs."""
    import matplotlib

    matplotlib.use("Agg")
    from fedkd.simulations.sweep_plots import plot_sweep
    from matplotlib.figure import Figure

    figures = {}
    real = Figure.savefig

    def keep(fig, path, *args, **kwargs):
        figures[os.path.basename(str(path))] = fig
        return real(fig, path, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    plot_sweep(out, rows)
    return figures


def _legend_colors(fig):
    """(label, hex colour) of every legend entry of every panel of a figure."""
    from matplotlib.colors import to_hex

    entries = []
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            line = handle[0] if isinstance(handle, tuple) else handle  # errorbar container
            entries.append((label.removesuffix(" (ε = ∞)"), to_hex(line.get_color())))
    return entries


def _private_and_non_private_sweep(tmp_path):
    spec = parse_spec(
        {
            "base": BASE,
            "grids": [
                {"privacy.mechanisms": [["dpsgd"]], "epsilon": [1, 2], "seed": [0, 1]},
                {"method": ["central", "fedkd"], "seed": [0, 1]},
            ],
        }
    )
    _, rows = run_sweep(spec, tmp_path, progress=False, plots=False)
    central = tmp_path / "method=central__seed=0" / "metrics.json"
    for path in tmp_path.glob("method=central__seed=*/metrics.json"):
        metrics = json.loads(path.read_text())  # central sends nothing: not in the bytes plot
        for r in metrics["rounds"]:
            r["bytes_up"] = 0
        path.write_text(json.dumps(metrics))
    assert central.exists()
    return rows


def test_each_series_has_one_colour_in_every_plot_and_panel(tmp_path, fake_runs, monkeypatch):
    rows = _private_and_non_private_sweep(tmp_path)
    figures = _figures_of_plot_sweep(tmp_path, rows, monkeypatch)
    assert set(figures) == {
        "accuracy_vs_epsilon.png",
        "accuracy_vs_round.png",
        "accuracy_vs_uplink_bytes.png",
    }
    colours: dict[str, set[str]] = {}
    for name, fig in figures.items():
        for label, colour in _legend_colors(fig):
            colours.setdefault(label, set()).add(colour)
            assert label in {"fedkd", "central", "fedkd / dpsgd (example-level)"}, (name, label)
    assert set(colours) == {"fedkd", "central", "fedkd / dpsgd (example-level)"}
    assert all(len(c) == 1 for c in colours.values()), colours
    assert len({next(iter(c)) for c in colours.values()}) == 3  # and distinct series differ


def test_epsilon_plot_draws_non_private_references_as_horizontal_lines(
    tmp_path, fake_runs, monkeypatch
):
    rows = _private_and_non_private_sweep(tmp_path)
    fig = _figures_of_plot_sweep(tmp_path, rows, monkeypatch)["accuracy_vs_epsilon.png"]
    (ax,) = fig.axes
    refs = {line.get_label(): line for line in ax.get_lines() if "ε = ∞" in line.get_label()}
    assert set(refs) == {"fedkd (ε = ∞)", "central (ε = ∞)"}
    for line in refs.values():
        assert list(line.get_xdata()) == [0, 1]  # axes coordinates: the whole width
        assert list(line.get_ydata()) == pytest.approx([0.55, 0.55])  # mean of seeds 0, 1
    assert "∞" not in [t.get_text() for t in ax.get_xticklabels()]
    xs = [x for line in ax.get_lines() if "ε = ∞" not in line.get_label() for x in line.get_xdata()]
    assert xs and max(xs) == 2  # no point past the largest finite ε


def test_results_md_gives_a_single_seed_without_a_zero_std(tmp_path, fake_runs):
    from fedkd.simulations.sweep_plots import summary_table

    _, one = run_sweep(_spec({"seed": [1]}), tmp_path / "one", progress=False, plots=False)
    table = summary_table(one)
    assert "± 0.0000" not in table and "| 0.6000 (1 seed) |" in table
    assert (tmp_path / "one" / "results.md").read_text() == table
    _, two = run_sweep(_spec({"seed": [0, 1]}), tmp_path / "two", progress=False, plots=False)
    assert "| 0.5500 ± 0.0707 |" in summary_table(two)  # sample std of 0.5 and 0.6


def test_sweep_workers_keep_flowers_log_quiet_unless_verbose(monkeypatch):
    # A spawned worker does not run the CLI's logging set-up: without this, each of Flower's
    # lines came out twice per cell (795 lines for a 3-cell sweep).
    import logging
    import signal

    from fedkd.simulations.sweep import _init_worker

    monkeypatch.setattr(signal, "signal", lambda *a: None)
    flwr_logger = logging.getLogger("flwr")
    monkeypatch.setattr(flwr_logger, "propagate", True)
    monkeypatch.setattr(flwr_logger, "level", logging.INFO)
    _init_worker(verbose=True)
    assert flwr_logger.propagate and flwr_logger.level == logging.INFO
    _init_worker(verbose=False)
    assert not flwr_logger.propagate and flwr_logger.level == logging.WARNING
