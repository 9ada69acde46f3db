"""The noise in real releases of each path has the σ the ledger records.

Each test drives the shipped release code (DP-SGD through ``private_revisit``, the Gaussian
teacher and PATE through ``CentralMechanism.teacher``) on inputs whose signal is known, so
what is left is the noise; its measured scale must match the σ of the ledger entry the
same call wrote. A mechanism wired with σ/2 while the ledger says σ fails here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import norm

from fedkd.clientdata import ClientData
from fedkd.config import from_dict
from fedkd.mechanisms import CentralMechanism
from fedkd.privacy import gaussian
from fedkd.privacy.client import RevisitLimits, private_revisit


def test_dpsgd_update_noise_has_the_ledger_sigma():
    # Prepare: zero inputs make every weight gradient 0, so one step moves the weights by
    # lr * noise / (q n) only, with noise ~ N(0, (σC)^2) per coordinate.
    n, features, classes = 200, 300, 10  # 3,000 noisy weights: σ to about 1.3 %
    cfg = from_dict(
        {
            "clients": {"local_epochs": 1, "batch_size": n, "lr": 1.0},
            "privacy": {
                "mechanisms": ["dpsgd"],
                "dpsgd": {"noise_multiplier": 1.7, "max_grad_norm": 0.5},
            },
        }
    )
    data = ClientData(
        x_private=np.zeros((n, features), np.float32),
        y_private=np.arange(n) % classes,
        x_proxy=np.zeros((5, features), np.float32),
        input_shape=(features,),
        num_classes=classes,
    )
    model = torch.nn.Linear(features, classes, bias=False)
    before = model.weight.detach().clone()
    # Execute: the server charged this round's one planned step.
    limits = RevisitLimits(server_steps=1, budget=None)
    _, _, metrics = private_revisit(cfg, model, data, 0, 1, None, limits)
    # Assert: q = 1 (one full batch), so the expected batch is n.
    delta_w = (model.weight.detach() - before).numpy().ravel()
    measured_sigma = delta_w.std() * n / (1.0 * 0.5)
    assert metrics["dpsgd-steps"] == 1 and metrics["dpsgd-sample-rate"] == 1.0
    assert measured_sigma == pytest.approx(metrics["dpsgd-noise"], rel=0.1)


def _mechanism(overrides):
    cfg = from_dict({"clients": {"num_clients": 50}}, overrides)
    return cfg, CentralMechanism(cfg, num_examples=1000, num_proxy=2000)


def test_gaussian_teacher_noise_has_the_ledger_sigma(monkeypatch):
    # Prepare: no client replied, so the released sum is pure noise; record it on its way.
    cfg, mech = _mechanism(
        [
            "privacy.mechanisms=[gaussian]",
            "privacy.gaussian.noise_multiplier=2.5",
            "privacy.gaussian.clip_norm=0.3",
        ]
    )
    seen = []
    real = gaussian.noisy_sum
    monkeypatch.setattr(
        gaussian, "noisy_sum", lambda *a, **k: seen.append(real(*a, **k)) or seen[-1]
    )
    # Execute
    for rnd in range(1, 6):
        mech.teacher(rnd, np.zeros((0, 400, 10), np.float32), np.zeros(0), 50)
    # Assert
    noise = np.concatenate([s.ravel() for s in seen])
    recorded = {r.noise_multiplier for r in mech.ledger.releases}
    assert recorded == {2.5} and len(mech.ledger) == 5
    assert noise.std() == pytest.approx(2.5 * 0.3, rel=0.05)


def _gnmax_accuracy(margin: float, classes: int) -> float:
    """P(argmax = the voted class) for votes (margin·σ, 0, ..., 0) plus N(0, σ²) each:
    E_X[Φ(margin + X)^(classes-1)], X ~ N(0, 1), by quadrature."""
    x = np.linspace(-8, 8, 4001)
    return float(np.trapezoid(norm.pdf(x) * norm.cdf(margin + x) ** (classes - 1), x))


def test_gnmax_noise_has_the_ledger_sigma():
    # Prepare: 6 teachers vote class 0 on every query; the rest of the histogram is 0.
    sigma, teachers, queries, classes = 3.0, 6, 4000, 10
    cfg, mech = _mechanism(["privacy.mechanisms=[pate]", f"privacy.pate.sigma={sigma}"])
    preds = np.zeros((teachers, queries, classes), np.float32)
    preds[:, :, 0] = 1.0
    # Execute
    rows, labels = mech.teacher(1, preds, np.ones(teachers), teachers)
    # Assert: the share of queries answered 0 matches σ, not σ/2 (or 2σ).
    measured = float(labels[:, 0].mean())
    assert mech.ledger.releases[-1].noise_multiplier == sigma
    assert measured == pytest.approx(_gnmax_accuracy(teachers / sigma, classes), abs=0.03)
    assert abs(measured - _gnmax_accuracy(teachers / (sigma / 2), classes)) > 0.1


def test_a_pate_round_nobody_joined_still_releases_and_is_charged():
    # Under Poisson sampling an empty round is a valid outcome; it must release (pure noise)
    # rather than fail, and the ledger must charge it.
    cfg, mech = _mechanism(
        ["privacy.mechanisms=[pate]", "clients.sampling=poisson", "clients.sample_rate=0.1"]
    )
    rows, labels = mech.teacher(1, np.zeros((0, 40, 10), np.float32), np.zeros(0), 50)
    assert labels.shape == (40, 10) and len(mech.ledger) == 1
