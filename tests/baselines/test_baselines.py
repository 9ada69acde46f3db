"""Each baseline end to end on a tiny digits setting (3 clients, 2 rounds)."""

from __future__ import annotations

import json
import math

import pytest
from fedkd.simulations.baselines import METHODS, run_method
from fedkd.simulations.baselines.calibrate import apply_epsilon, dp_fedavg_sigma, gaussian_sigma
from fedkd.simulations.baselines.common import central_student, load_data

from fedkd.config import ConfigError, from_dict
from fedkd.models import ModelError
from fedkd.rundir import RunDir

TINY = {
    "seed": 3,
    "rounds": 2,
    "data": {"source": "digits"},
    "clients": {"num_clients": 3, "local_epochs": 1, "models": ["mlp"], "lr": 0.05},
    "distill": {"student": "mlp"},
    "privacy": {
        "dpsgd": {"target_epsilon": 4.0},
        "gaussian": {"noise_multiplier": 2.0, "clip_norm": 5.0},
        "client_delta": 0.1,
    },
    "runtime": {"backend": "inprocess"},
}

ROW_KEYS = {"round", "student_accuracy", "bytes_up", "bytes_down", "bytes_up_per_client", "seconds"}


def _check_run(path, rounds=2):
    run = RunDir(path)
    assert run.is_done()
    summary = json.loads((path / "DONE").read_text())
    rows = run.read_metrics()
    assert [r["round"] for r in rows][-1] == rounds == summary["rounds_completed"]
    for row in rows:
        assert set(row) >= ROW_KEYS
        assert 0.0 <= row["student_accuracy"] <= 1.0
    assert summary["student_accuracy"] == rows[-1]["student_accuracy"]
    assert run.read_config() == from_dict(TINY)
    return summary, rows


def test_central_learns(tmp_path):
    summary, rows = _check_run_method("central", tmp_path)
    assert summary["student_accuracy"] > 0.5  # pooled digits, 2 epochs
    assert all(r["bytes_up"] == 0 == r["bytes_down"] for r in rows)


def _check_run_method(method, tmp_path):
    run_method(method, from_dict(TINY), tmp_path / method)
    return _check_run(tmp_path / method)


def test_central_dpsgd_reaches_target_epsilon(tmp_path):
    summary, rows = _check_run_method("central-dpsgd", tmp_path)
    eps = [r["epsilon_example"] for r in rows]
    assert eps[0] < eps[1] <= 4.0 + 1e-9  # cumulative, calibrated for the whole run
    assert eps[1] > 3.5
    assert summary["delta_example"] == 1e-5 and summary["noise_multiplier"] > 0


def test_local_reports_mean_and_worst(tmp_path):
    summary, rows = _check_run_method("local", tmp_path)
    accs = summary["client_accuracies"]
    assert len(accs) == 3
    assert summary["worst_client_accuracy"] == pytest.approx(min(accs), abs=1e-4)
    assert summary["student_accuracy"] == pytest.approx(sum(accs) / 3, abs=1e-3)


def test_fedavg_counts_bytes_both_ways(tmp_path):
    summary, rows = _check_run_method("fedavg", tmp_path)
    for row in rows:
        assert row["clients"] == 3
        assert len(row["bytes_up_per_client"]) == 3
        assert row["bytes_up"] == sum(row["bytes_up_per_client"].values()) > 0
        assert row["bytes_down"] > row["bytes_up"]  # weights + the run config go down
    assert summary["student_accuracy"] > 0.15


def test_dp_fedavg_accounts_with_flower(tmp_path):
    summary, rows = _check_run_method("dp-fedavg", tmp_path)
    from fedkd.simulations.baselines.calibrate import dp_fedavg_sigma  # noqa: F401 - same accountant

    eps = [r["epsilon_client"] for r in rows]
    assert 0 < eps[0] < eps[1]
    assert summary["delta_client"] == 0.1
    assert "no-amplification" in summary["accounting"]


def test_dp_fedavg_refuses_poisson_sampling(tmp_path):
    raw = json.loads(json.dumps(TINY))
    raw["clients"].update({"sampling": "poisson", "sample_rate": 0.5})
    with pytest.raises(ConfigError, match="no-amplification"):
        run_method("dp-fedavg", from_dict(raw), tmp_path / "x")


def test_unknown_method(tmp_path):
    with pytest.raises(ConfigError, match="unknown method"):
        run_method("fedprox", from_dict(TINY), tmp_path / "x")
    assert set(METHODS) == {"fedkd", "central", "central-dpsgd", "local", "fedavg", "dp-fedavg"}


def test_calibration_is_conservative():
    # The Gaussian teacher is calibrated under replace-one by PLD; recompute independently.
    from dp_accounting import dp_event
    from dp_accounting.pld import PLDAccountant
    from dp_accounting.privacy_accountant import NeighboringRelation

    sigma = gaussian_sigma(2.0, 1e-3, 10, 0.5)
    acc = PLDAccountant(neighboring_relation=NeighboringRelation.REPLACE_ONE)
    event = dp_event.PoissonSampledDpEvent(0.5, dp_event.GaussianDpEvent(sigma))
    acc.compose(dp_event.SelfComposedDpEvent(event, 10))
    assert 1.9 < acc.get_epsilon(1e-3) <= 2.0 + 1e-6
    assert dp_fedavg_sigma(1.0, 1e-3, 5, 10) > dp_fedavg_sigma(4.0, 1e-3, 5, 10)


def test_apply_epsilon_per_method():
    raw = json.loads(json.dumps(TINY))
    raw["privacy"]["mechanisms"] = ["gaussian"]
    out = apply_epsilon("fedkd", json.loads(json.dumps(raw)), 2.0)
    assert out["privacy"]["gaussian"]["noise_multiplier"] > 1.0
    out = apply_epsilon("fedkd", json.loads(json.dumps(raw)), math.inf)
    assert out["privacy"]["mechanisms"] == []
    raw["privacy"]["mechanisms"] = ["dpsgd"]
    assert apply_epsilon("fedkd", raw, 3.0)["privacy"]["dpsgd"]["target_epsilon"] == 3.0
    with pytest.raises(ConfigError, match="non-private"):
        apply_epsilon("fedavg", json.loads(json.dumps(TINY)), 1.0)
    with pytest.raises(ConfigError, match="inf"):
        apply_epsilon("dp-fedavg", json.loads(json.dumps(TINY)), math.inf)
    raw["privacy"]["mechanisms"] = ["pate"]
    with pytest.raises(ConfigError, match="proxy_per_round"):
        apply_epsilon("fedkd", raw, 1.0)


def test_central_student_trains_a_head_on_its_public_features(tmp_path):
    raw = {
        **TINY,
        "distill": {"student": "linear", "feature_map": "scattering", "public_features": 16},
    }
    cfg = from_dict(raw)
    data = load_data(cfg)
    head, seen = central_student(cfg, data)
    assert seen.x_private.shape == (len(data.y_private), 16)  # whitened PCA of scattering
    assert seen.x_test.shape == (len(data.y_test), 16)
    assert sum(p.numel() for p in head.parameters()) == 16 * 10 + 10
    run_method("central", cfg, tmp_path / "central")
    summary = json.loads((tmp_path / "central" / "DONE").read_text())
    assert summary["student_accuracy"] > 0.5


def _on_features(section: str, model_key: str, model: object) -> dict:
    raw = json.loads(json.dumps(TINY))
    raw[section].update({model_key: model, "feature_map": "scattering", "public_features": 16})
    return raw


def test_fedavg_moves_only_the_head_of_a_student_on_public_features(tmp_path):
    pixels = json.loads(json.dumps(TINY))
    pixels["distill"]["student"] = "linear"
    run_method("fedavg", from_dict(pixels), tmp_path / "pixels")
    run_method("fedavg", from_dict(_on_features("distill", "student", "linear")), tmp_path / "pca")
    per_client = {
        name: RunDir(tmp_path / name).read_metrics()[-1]["bytes_up_per_client"]
        for name in ("pixels", "pca")
    }
    # Linear on 64 pixels has 650 parameters, the head on 16 features 170: ~4x fewer bytes.
    assert max(per_client["pca"].values()) < min(per_client["pixels"].values()) / 2.5
    summary = json.loads((tmp_path / "pca" / "DONE").read_text())
    assert summary["student_accuracy"] > 0.5  # the head is trained on the features it sees


def test_local_trains_each_client_on_its_public_features(tmp_path):
    cfg = from_dict(_on_features("clients", "models", ["linear"]))
    summary = run_method("local", cfg, tmp_path / "local")
    assert len(summary["client_accuracies"]) == 3
    assert summary["worst_client_accuracy"] > 0.2
    # The clients' feature keys are honoured: an image model on PCA features is refused.
    with pytest.raises(ModelError, match="clients.public_features=16"):
        run_method("local", from_dict(_on_features("clients", "models", ["cnn"])), tmp_path / "x")
