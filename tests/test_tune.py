"""``fedkd tune``: K trials per method on the validation split, selection, final seeds."""

from __future__ import annotations

import csv
import json
import logging
import math

import pytest
import yaml
from fedkd.simulations import sweep
from fedkd.simulations.cli import main
from fedkd.simulations.sweep import RESULT_COLUMNS
from fedkd.simulations.tune import run_tune, select
from fedkd.simulations.tune_spec import Range, Series, candidates, parse_tune

from fedkd.config import ConfigError
from fedkd.rundir import RunDir

BASE = {
    "rounds": 1,
    "data": {"source": "digits"},
    "clients": {"num_clients": 2, "local_epochs": 1},
    "distill": {"epochs": 1, "proxy_per_round": 60},
    "runtime": {"backend": "inprocess"},
}


def _raw(**extra):
    raw = {
        "base": BASE,
        "trials": 2,
        "seed": 0,
        "validation_fraction": 0.15,
        "tune_seed": 9,
        "seeds": [0, 1, 2],
        "methods": {
            "central": {"space": {"clients.lr": [0.05, 0.1]}},
            "fedkd": {"space": {"distill.lr": {"low": 0.01, "high": 0.1, "log": True}}},
        },
    }
    raw.update(extra)
    return raw


def _read_csv(path):
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.fixture
def fake_runs(monkeypatch):
    """Fast fake runs. Validation accuracy is best for trial 1 of each series, test
    accuracy for trial 0: a selection on test would pick the other trial."""
    calls = []

    def fake(cell, path):
        calls.append(cell.name)
        trial = int(cell.name.split("trial=")[1].split("__")[0])
        val, test = (0.6, 0.9) if trial == 0 else (0.8, 0.2)
        run = RunDir(path)
        path.mkdir(parents=True)
        run.write_config(cell.config)
        run.write_metrics([{"round": 1, "student_accuracy": test, "student_val_accuracy": val}], {})
        summary = {
            "rounds_completed": 1,
            "student_accuracy": test + 0.01 * cell.config.seed,
            "final_val_accuracy": val,
            "seconds": 0.1,
        }
        run.mark_done(summary)
        return summary

    monkeypatch.setattr(sweep, "_run_cell", fake)
    return calls


def test_selection_picks_the_best_validation_trial_not_the_best_test_trial(tmp_path, fake_runs):
    # Execute
    result = run_tune(parse_tune(_raw()), tmp_path, progress=False)

    # Assert
    spec = parse_tune(_raw())
    lrs = [p["clients.lr"] for p in candidates(spec.series[0], 2, 0)]
    assert all(k == 1 for k in result["selected"].values())
    selected = yaml.safe_load((tmp_path / "selected.yaml").read_text())
    assert selected["central"]["inf"] == {"clients.lr": lrs[1]}
    finals = [r for r in result["results"] if r["series"] == "central"]
    assert len(finals) == 3 and {r["seed"] for r in finals} == {0, 1, 2}
    for r in finals:
        cfg = RunDir(tmp_path / r["cell"]).read_config()
        assert cfg.clients.lr == lrs[1] and cfg.data.validation_fraction == 0.15
    trials = _read_csv(tmp_path / "trials.csv")
    assert [t["selected"] for t in trials] == ["False", "True"] * 2


def test_every_method_gets_the_same_number_of_trials_on_the_tuning_seed(tmp_path, fake_runs):
    # Prepare
    raw = _raw(trials=3)
    raw["methods"]["central"]["space"]["clients.lr"] = [0.01, 0.05, 0.1, 0.2]

    # Execute
    run_tune(parse_tune(raw), tmp_path, progress=False)

    # Assert
    trials = _read_csv(tmp_path / "trials.csv")
    per_series = {s: sum(t["series"] == s for t in trials) for s in ("central", "fedkd")}
    assert per_series == {"central": 3, "fedkd": 3}
    for path in (tmp_path / "trials").iterdir():
        if path.is_dir():
            assert RunDir(path).read_config().seed == 9
    with pytest.raises(ConfigError, match="unknown key"):
        parse_tune(_raw(methods={"central": {"trials": 5, "space": {"clients.lr": [0.1]}}}))


def test_the_trials_file_has_no_test_accuracy(tmp_path, fake_runs):
    # Execute
    run_tune(parse_tune(_raw()), tmp_path, progress=False)

    # Assert
    header = (tmp_path / "trials.csv").read_text().splitlines()[0].split(",")
    assert "val_accuracy" in header
    assert not [c for c in header if "student_accuracy" in c or "test" in c]
    assert {float(t["val_accuracy"]) for t in _read_csv(tmp_path / "trials.csv")} == {0.6, 0.8}


def test_results_csv_has_the_sweep_columns_and_summary_the_mean_and_std(tmp_path, fake_runs):
    # Execute
    run_tune(parse_tune(_raw()), tmp_path, progress=False)

    # Assert
    header = (tmp_path / "results.csv").read_text().splitlines()[0].split(",")
    assert header[0] == "cell" and header[-len(RESULT_COLUMNS) :] == list(RESULT_COLUMNS)
    summary = {r["series"]: r for r in _read_csv(tmp_path / "summary.csv")}
    central = summary["central"]
    assert central["seeds"] == "3"
    assert float(central["val_accuracy_mean"]) == pytest.approx(0.8)
    assert float(central["test_accuracy_mean"]) == pytest.approx(0.21)
    assert float(central["test_accuracy_std"]) == pytest.approx(0.01)


def test_resume_skips_finished_runs_and_reruns_interrupted_ones(tmp_path, fake_runs):
    # Prepare
    spec = parse_tune(_raw())
    run_tune(spec, tmp_path, progress=False)
    assert len(fake_runs) == 2 * 2 + 2 * 3
    trial = next(p for p in (tmp_path / "trials").iterdir() if p.is_dir())
    (trial / "DONE").unlink()
    fake_runs.clear()

    # Execute
    run_tune(spec, tmp_path, progress=False)

    # Assert
    assert fake_runs == [trial.name]
    fake_runs.clear()
    run_tune(spec, tmp_path, progress=False)
    assert fake_runs == []
    with pytest.raises(ConfigError, match="holds a tune of another spec"):
        run_tune(parse_tune(_raw(seed=1)), tmp_path, progress=False)


def test_select_takes_the_first_of_equal_best_and_ranks_nan_last():
    assert select([0.5, 0.7, 0.7]) == 1
    assert select([math.nan, 0.1]) == 1
    assert select([math.nan, math.nan]) == 0


def test_candidates_are_distinct_grid_points_or_draws_within_the_ranges():
    # Prepare
    grid = Series("g", "central", (math.inf,), {}, {"a": [1, 2], "b": [0.1, 0.2, 0.3]})
    ranged = Series(
        "r",
        "central",
        (math.inf,),
        {},
        {"lr": Range(0.01, 1.0, log=True), "e": Range(1, 4, integer=True)},
    )

    # Execute
    points = candidates(grid, 4, seed=0)
    draws = candidates(ranged, 20, seed=0)

    # Assert
    assert len({json.dumps(p, sort_keys=True) for p in points}) == 4
    assert all(p["a"] in (1, 2) and p["b"] in (0.1, 0.2, 0.3) for p in points)
    assert candidates(grid, 4, seed=0) == points and candidates(grid, 4, seed=1) != points
    assert all(0.01 <= d["lr"] <= 1.0 and d["e"] in (1, 2, 3, 4) for d in draws)
    assert sum(d["lr"] < 0.1 for d in draws) >= 5  # log-uniform: half the draws below 0.1
    assert candidates(Series("one", "central", (math.inf,), {}, {"a": [1]}), 1, 0) == [{"a": 1}]


def test_one_trial_of_a_one_point_space_is_a_plain_sweep(tmp_path, fake_runs):
    # Prepare
    raw = _raw(trials=1, methods={"central": {"space": {"clients.lr": [0.1]}}})

    # Execute
    result = run_tune(parse_tune(raw), tmp_path, progress=False)

    # Assert
    assert result["selected"] == {("central", math.inf): 0}
    assert [r["status"] for r in result["results"]] == ["done"] * 3
    assert {RunDir(tmp_path / r["cell"]).read_config().clients.lr for r in result["results"]} == {
        0.1
    }


@pytest.fixture
def root_handlers():
    """Restore the root logger's handlers: the CLI points one at the captured stderr."""
    root = logging.getLogger()
    saved = root.handlers[:]
    yield
    root.handlers[:] = saved


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"trials": 0}, "'trials' must be >= 1"),
        ({"validation_fraction": 0}, "'validation_fraction' must be in (0, 1)"),
        ({"seeds": [0, 1]}, "at least 3 distinct seeds"),
        ({"tune_seed": 1}, "'tune_seed' 1 is one of 'seeds'"),
        ({"trials": 3}, "methods.central.space has 2 point(s), fewer than trials=3"),
        ({"methods": {"central": {"space": {"seed": [1, 2]}}}}, "may not search 'seed'"),
        ({"methods": {"fedavg": {"epsilon": [1], "space": {"clients.lr": [1, 2]}}}}, "non-private"),
        ({"methods": {"x": {"method": "nope"}}}, "unknown method 'nope'"),
        (
            {"methods": {"central": {"space": {"clients.lr": {"low": 1, "high": 0.1}}}}},
            "low must be < high",
        ),
        ({"oops": 1}, "unknown key(s) oops"),
    ],
)
def test_a_bad_tune_file_is_one_line_and_exit_2(tmp_path, capsys, root_handlers, change, needle):
    # Prepare
    path = tmp_path / "tune.yaml"
    path.write_text(yaml.safe_dump(_raw(**change)))

    # Execute
    code = main(["tune", str(path), "--out", str(tmp_path / "out")])

    # Assert
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert needle in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_a_tiny_tune_end_to_end_on_digits(tmp_path, capsys, root_handlers):
    # Prepare: two methods, K = 2, one round, real runs
    path = tmp_path / "tune.yaml"
    path.write_text(yaml.safe_dump(_raw()))

    # Execute: one run at a time (parallel cells equal sequential ones: test_sweep.py)
    code = main(["tune", str(path), "--out", str(tmp_path / "out"), "--jobs", "1"])

    # Assert
    out = tmp_path / "out"
    assert code == 0, capsys.readouterr().err
    assert "2 settings selected on validation accuracy; 6/6 final runs done" in (
        capsys.readouterr().out
    )
    trials = _read_csv(out / "trials.csv")
    assert len(trials) == 4 and all(0 <= float(t["val_accuracy"]) <= 1 for t in trials)
    for series in ("central", "fedkd"):
        scores = [float(t["val_accuracy"]) for t in trials if t["series"] == series]
        picked = [t["selected"] == "True" for t in trials if t["series"] == series]
        assert picked.index(True) == scores.index(max(scores))
    results = _read_csv(out / "results.csv")
    assert len(results) == 6
    assert all(0 <= float(r["val_accuracy"]) <= 1 for r in results)
    assert all(0 <= float(r["student_accuracy"]) <= 1 for r in results)
    assert {r["seed"] for r in results} == {"0", "1", "2"}


def test_the_digits_tune_file_tunes_the_sweep_methods_with_one_k_and_valid_settings():
    # Prepare: parse without calibrating (that takes minutes): the structure and the keys
    from pathlib import Path

    from fedkd.simulations.sweep_spec import _assign, _merge
    from fedkd.simulations.tune_spec import _series

    from fedkd.config import from_dict

    path = Path(__file__).resolve().parents[1] / "simulations" / "configs" / "tune_digits.yaml"
    raw = yaml.safe_load(path.read_text())
    base = yaml.safe_load((path.parent / raw["base"]).read_text())

    # Execute
    series = [_series(name, s) for name, s in raw["methods"].items()]

    # Assert
    assert raw["trials"] == 4 and raw["validation_fraction"] == 0.15 and len(raw["seeds"]) >= 3
    eps = {
        (s.method, tuple(s.fixed.get("privacy", {}).get("mechanisms", []))): s.epsilons
        for s in series
    }
    inf, private = (math.inf,), (1.0, 2.0, 4.0, 8.0)
    assert eps == {
        ("central", ()): inf,
        ("local", ()): inf,
        ("fedavg", ()): inf,
        ("fedkd", ()): inf,
        ("central-dpsgd", ()): private,
        ("dp-fedavg", ()): private,
        ("fedkd", ("gaussian",)): private,
        ("fedkd", ("pate",)): private,
        ("fedkd", ("dpsgd",)): private,
    }
    for s in series:
        assert len(s.space) >= 2, s.name
        for point in candidates(s, raw["trials"], raw["seed"]):
            cfg_raw = _merge(_merge(base, {"rounds": 10}), s.fixed)
            for key, value in point.items():
                _assign(cfg_raw, key, value)
            _assign(cfg_raw, "privacy.dpsgd.target_epsilon", 1.0)
            from_dict(cfg_raw)  # every searched key exists and every value is valid
