"""distill.warm_start: clients of the student's architecture start from its weights."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from fedkd.simulations.runner import simulate
from flwr.app import Array, ArrayRecord

from fedkd.clientdata import ClientData, splits_for
from fedkd.clientstate import ClientState
from fedkd.config import ConfigError, from_dict
from fedkd.distill import predict_probs
from fedkd.local import RoundTask, local_round
from fedkd.models import ModelError, build_model
from fedkd.student import Student
from fedkd.warmstart import head_arrays, load_head, warm_starts
from fedkd.wire import wire_dict


def _cfg(**distill):
    return from_dict(
        {
            "clients": {"models": ["mlp", "cnn"], "local_epochs": 0, "digest_epochs": 0},
            "distill": {"student": "mlp", "codec": "fp32", **distill},
        }
    )


def _data(seed=0):
    rng = np.random.default_rng(seed)
    x_private = rng.random((30, 8, 8), dtype=np.float32)
    x_proxy = rng.random((50, 8, 8), dtype=np.float32)
    return ClientData(x_private, rng.integers(0, 3, 30), x_proxy, (8, 8), 3)


def test_only_clients_built_as_the_student_warm_start():
    cfg = _cfg(warm_start=True)
    assert warm_starts(cfg, "mlp")
    assert not warm_starts(cfg, "cnn")
    assert not warm_starts(_cfg(), "mlp")  # off by default
    pca = from_dict(
        {"clients": {"public_features": 8}, "distill": {"student": "mlp", "warm_start": True}}
    )
    assert not warm_starts(pca, "mlp")  # the student sees pixels, the client a PCA
    dpsgd = replace(cfg, privacy=replace(cfg.privacy, mechanisms=("dpsgd",)))  # unvalidated
    assert not warm_starts(dpsgd, "mlp")  # a client never runs DP-SGD from server weights


def test_warm_start_with_dpsgd_is_refused_naming_both_keys():
    with pytest.raises(ConfigError, match="distill.warm_start .* privacy.mechanisms dpsgd"):
        from_dict(
            {"distill": {"warm_start": True}, "privacy": {"mechanisms": ["dpsgd"]}},
            ["privacy.dpsgd.noise_multiplier=1.0"],
        )


def test_a_warm_client_predicts_with_the_students_weights():
    data = _data()
    student = build_model("mlp", (8, 8), 3, seed=123)
    weights = head_arrays(student)
    task = RoundTask(server_round=2, proxy_idx=np.arange(0, 50, 3), student_weights=weights)
    expected = predict_probs(student, data.x_proxy[task.proxy_idx])
    warm = local_round(_cfg(warm_start=True), data, 0, task, None)  # client 0: mlp
    np.testing.assert_allclose(warm.probs, expected, atol=1e-6)
    cold = local_round(_cfg(), data, 0, task, None)  # the key off: its own weights
    assert np.abs(cold.probs - expected).max() > 1e-3
    other = local_round(_cfg(warm_start=True), data, 1, task, None)  # client 1: cnn
    assert other.probs.shape == expected.shape  # ignores weights it cannot use


def test_a_warm_client_trains_from_the_student_as_if_it_had_been_its_own_model():
    data = _data()
    student = build_model("mlp", (8, 8), 3, seed=123)
    task = RoundTask(server_round=2, proxy_idx=np.arange(0, 50, 3))
    trained = {"clients": {"models": ["mlp"], "local_epochs": 2, "lr": 0.1}}
    cfg = from_dict(trained, ["distill.student=mlp", "distill.warm_start=true"])
    warm = local_round(cfg, data, 0, replace(task, student_weights=head_arrays(student)), None)
    # The same client with the student's weights as last round's model, fresh optimizer.
    own = ClientState(round=1, model=student.state_dict())
    from_state = local_round(from_dict(trained, ["distill.student=mlp"]), data, 0, task, own)
    np.testing.assert_allclose(warm.probs, from_state.probs, atol=1e-6)
    untrained = predict_probs(student, data.x_proxy[task.proxy_idx])
    assert np.abs(warm.probs - untrained).max() > 1e-3  # it trained after loading


def test_student_weights_that_do_not_fit_are_refused_and_nothing_is_loaded():
    head = build_model("mlp", (8, 8), 3, seed=0)
    before = {k: v.clone() for k, v in head.state_dict().items()}
    good = head_arrays(build_model("mlp", (8, 8), 3, seed=1))
    key = next(iter(good))
    bad_shape = {**good, key: good[key][:1]}
    with pytest.raises(ModelError, match=f"model 'mlp': '{key}' has shape"):
        load_head(head, bad_shape, "mlp")
    with pytest.raises(ModelError, match="missing"):
        load_head(head, {k: v for k, v in good.items() if k != key}, "mlp")
    not_finite = {**good, key: np.full_like(good[key], np.nan)}
    with pytest.raises(ModelError, match="not finite"):
        load_head(head, not_finite, "mlp")
    with pytest.raises(ModelError, match="float64"):
        load_head(head, {**good, key: good[key].astype(np.float64)}, "mlp")
    for k, v in head.state_dict().items():
        assert torch.equal(v, before[k]), k
    load_head(head, good, "mlp")
    assert all(np.array_equal(head.state_dict()[k].numpy(), v) for k, v in good.items())


BASE = {
    "rounds": 2,
    "clients": {"num_clients": 3, "local_epochs": 1, "models": ["mlp", "cnn"], "lr": 0.1},
    "distill": {"epochs": 2, "proxy_per_round": 60, "codec": "fp16", "student": "mlp"},
    "runtime": {"backend": "inprocess"},
}


def test_the_student_goes_down_to_its_architecture_only_and_nothing_more_goes_up(tmp_path):
    runs, sent = {}, {}
    for name, warm in (("cold", "false"), ("warm", "true")):
        cfg = from_dict(BASE, [f"distill.warm_start={warm}"])
        simulate(cfg, tmp_path / name)
        runs[name] = json.loads((tmp_path / name / "metrics.json").read_text())["rounds"]
        sent[name] = len(json.dumps(wire_dict(cfg)))  # the config every message carries
    splits = splits_for(cfg.data, cfg.seed)
    student = Student(cfg, tuple(splits.input_shape), int(splits.num_classes))
    record = ArrayRecord({k: Array(v) for k, v in head_arrays(student.head).items()})
    for cold, warm in zip(runs["cold"], runs["warm"], strict=True):
        # Clients 0 and 2 run the student's mlp; client 1 (cnn) gets only the longer config.
        config = 3 * (sent["warm"] - sent["cold"])
        assert warm["bytes_down"] - cold["bytes_down"] == 2 * record.count_bytes() + config
        assert warm["bytes_up"] == cold["bytes_up"]
    assert runs["warm"][-1]["teacher_accuracy"] != runs["cold"][-1]["teacher_accuracy"]
