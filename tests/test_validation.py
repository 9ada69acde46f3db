"""Validation accuracy beside test accuracy: fedkd runs, baselines, DONE, config errors."""

from __future__ import annotations

import json
import logging

import pytest
from fedkd.simulations.baselines import run_method
from fedkd.simulations.cli import main
from fedkd.simulations.runner import simulate

from fedkd.clientdata import client_data, partitions_for, splits_for
from fedkd.config import ConfigError, from_dict
from fedkd.validation import FINAL_KEY, ROW_KEY
from fedkd.wire import wire_dict

TINY = {
    "seed": 5,
    "rounds": 2,
    "data": {"source": "digits", "validation_fraction": 0.15},
    "clients": {"num_clients": 2, "local_epochs": 1, "lr": 0.1},
    "distill": {"epochs": 2, "proxy_per_round": 60},
    "runtime": {"backend": "inprocess"},
}


def _without_validation() -> dict:
    return {**TINY, "data": {"source": "digits"}}


def _rows(path):
    return json.loads((path / "metrics.json").read_text())["rounds"]


def test_a_fedkd_run_reports_validation_accuracy_each_round_and_in_done(tmp_path):
    # Execute
    summary = simulate(from_dict(TINY), tmp_path / "run")

    # Assert
    rows = _rows(tmp_path / "run")
    assert [r["round"] for r in rows] == [1, 2]
    assert all(0.0 <= r[ROW_KEY] <= 1.0 for r in rows)
    done = json.loads((tmp_path / "run" / "DONE").read_text())
    assert done[FINAL_KEY] == rows[-1][ROW_KEY] == summary[FINAL_KEY]
    assert done["student_accuracy"] == rows[-1]["student_accuracy"]
    header = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert header[:3] == ["round", "student_accuracy", ROW_KEY]


def test_without_a_validation_split_nothing_is_added(tmp_path):
    # Execute
    summary = simulate(from_dict(_without_validation()), tmp_path / "run")

    # Assert
    assert FINAL_KEY not in summary
    assert all(ROW_KEY not in r for r in _rows(tmp_path / "run"))
    assert ROW_KEY not in (tmp_path / "run" / "metrics.csv").read_text()


def test_fraction_zero_gives_the_figures_of_a_run_without_the_key(tmp_path):
    # Prepare
    keys = ("student_accuracy", "student_loss", "teacher_accuracy", "bytes_up", "bytes_down")
    zero = {**TINY, "data": {"source": "digits", "validation_fraction": 0.0}}

    # Execute
    simulate(from_dict(_without_validation()), tmp_path / "a")
    simulate(from_dict(zero), tmp_path / "b")

    # Assert
    ra, rb = _rows(tmp_path / "a"), _rows(tmp_path / "b")
    assert [[r[k] for k in keys] for r in ra] == [[r[k] for k in keys] for r in rb]


def test_clients_never_train_on_validation_rows():
    # Prepare
    cfg = from_dict(TINY)
    splits = splits_for(cfg.data, cfg.seed)
    val_rows = {row.tobytes() for row in splits.x_val}

    # Execute
    parts = partitions_for(cfg.data, cfg.seed, 2)
    own = [client_data(cfg.data, cfg.seed, 2, i) for i in range(2)]

    # Assert
    assert sum(len(p) for p in parts) == len(splits.y_private)
    for data in own:
        assert not val_rows & {row.tobytes() for row in data.x_private}


@pytest.mark.parametrize("method", ["central", "local", "fedavg"])
def test_baselines_report_validation_accuracy(tmp_path, method):
    # Execute
    summary = run_method(method, from_dict(TINY), tmp_path / method)

    # Assert
    rows = _rows(tmp_path / method)
    assert all(0.0 <= r[ROW_KEY] <= 1.0 for r in rows)
    assert summary[FINAL_KEY] == rows[-1][ROW_KEY]


def test_local_reports_the_mean_client_validation_accuracy(tmp_path, monkeypatch):
    # Prepare: every client's accuracy is recorded, and the row must be their mean
    import fedkd.validation as validation

    seen: list[float] = []
    original = validation.val_metrics

    def spy(evaluate, x, y):
        out = original(evaluate, x, y)
        seen.append(out[ROW_KEY])
        return out

    monkeypatch.setattr(validation, "val_metrics", spy)

    # Execute
    run_method("local", from_dict({**TINY, "rounds": 1}), tmp_path / "local")

    # Assert
    (row,) = _rows(tmp_path / "local")
    assert len(seen) == 2
    assert row[ROW_KEY] == pytest.approx(sum(seen) / 2)


@pytest.fixture
def root_handlers():
    """Restore the root logger's handlers: the CLI points one at the captured stderr."""
    root = logging.getLogger()
    saved = root.handlers[:]
    yield
    root.handlers[:] = saved


@pytest.mark.parametrize("value", ["-0.1", "1", "1.5"])
def test_a_bad_validation_fraction_is_one_line_naming_the_key(
    tmp_path, capsys, root_handlers, value
):
    # Prepare
    with pytest.raises(ConfigError, match=r"data\.validation_fraction must be in \[0, 1\)"):
        from_dict(TINY, [f"data.validation_fraction={value}"])
    config = tmp_path / "tiny.yaml"
    config.write_text(json.dumps(TINY))

    # Execute
    code = main(["simulate", str(config), "--set", f"data.validation_fraction={value}"])

    # Assert
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "data.validation_fraction must be in [0, 1)" in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_the_config_sent_to_clients_omits_a_zero_fraction_and_round_trips():
    # Prepare
    off = from_dict(_without_validation())
    on = from_dict(TINY)

    # Execute
    wire_off, wire_on = wire_dict(off), wire_dict(on)

    # Assert: at 0 the bytes sent are those of a config without the key
    assert "validation_fraction" not in wire_off["data"]
    assert wire_on["data"]["validation_fraction"] == 0.15
    assert from_dict(wire_off) == off and from_dict(wire_on) == on
