"""One client round: which training the revisit runs, and on which rows."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

import fedkd.local as local
from fedkd import protocol as proto
from fedkd.clientdata import ClientData
from fedkd.config import from_dict
from fedkd.local import RoundTask, local_round


def _data() -> ClientData:
    rng = np.random.default_rng(0)
    x_private = rng.random((40, 8, 8), dtype=np.float32)
    x_proxy = rng.random((30, 8, 8), dtype=np.float32)
    return ClientData(x_private, rng.integers(0, 3, 40), x_proxy, (8, 8), 3)


def _task() -> RoundTask:
    probs = np.random.default_rng(1).dirichlet(np.ones(3), 6).astype(np.float32)
    return RoundTask(
        server_round=2,
        proxy_idx=np.arange(0, 30, 2),
        teacher_idx=np.array([3, 7, 11, 2, 29, 0]),
        teacher_probs=probs,
    )


def test_joint_training_distils_the_teacher_rows_it_was_sent_with_the_configs_settings(
    monkeypatch,
):
    seen = {}

    def capture(net, optimizer, x, y, x_public, public_probs, **kw):
        seen.update(x=x, x_public=x_public, public_probs=public_probs, **kw)
        return 0.5

    monkeypatch.setattr(local, "train_joint", capture)
    cfg = from_dict(
        {"clients": {"local_epochs": 3, "digest_epochs": 0, "joint_distill": 0.7, "batch_size": 8}},
        ["distill.temperature=2.5"],
    )
    data, task = _data(), _task()
    local_round(cfg, data, 0, task, None)
    np.testing.assert_array_equal(seen["x"], data.x_private)
    np.testing.assert_array_equal(seen["x_public"], data.x_proxy[task.teacher_idx])
    np.testing.assert_array_equal(seen["public_probs"], task.teacher_probs)
    assert (seen["weight"], seen["epochs"], seen["batch_size"]) == (0.7, 3, 8)
    assert seen["temperature"] == 2.5


def _refuse(*args, **kwargs):
    raise AssertionError("train_joint ran")


@pytest.mark.parametrize("teacher", [False, True])
def test_no_joint_step_without_teacher_rows_or_with_weight_zero(monkeypatch, teacher):
    monkeypatch.setattr(local, "train_joint", _refuse)
    task = _task() if teacher else RoundTask(server_round=1, proxy_idx=np.arange(5))
    weight = 0.0 if teacher else 1.0
    cfg = from_dict({"clients": {"local_epochs": 1, "joint_distill": weight}})
    assert local_round(cfg, _data(), 0, task, None).probs.shape == (len(task.proxy_idx), 3)


def test_a_dp_sgd_client_never_runs_the_joint_step_whatever_config_reaches_it(monkeypatch):
    monkeypatch.setattr(local, "train_joint", _refuse)
    cfg = from_dict(
        {"clients": {"local_epochs": 1, "digest_epochs": 0}},
        ["privacy.mechanisms=[gaussian, dpsgd]", "privacy.dpsgd.noise_multiplier=1.0"],
    )
    unvalidated = replace(cfg, clients=replace(cfg.clients, joint_distill=1.0))
    task = replace(_task(), dpsgd_steps=2)  # the steps the server charged (1 epoch, q = 0.5)
    result = local_round(unvalidated, _data(), 0, task, None)
    assert result.probs.shape == (15, 3)
    assert result.metrics[proto.DPSGD_STEPS_ROUND] == 2  # DP-SGD trained instead
