"""KD loss against a hand computation; local loops change the model as they should."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedkd.distill import (
    cosine_factor,
    kd_loss,
    make_optimizer,
    mix,
    predict_probs,
    soften,
    train_distill,
    train_joint,
    train_supervised,
)
from fedkd.models import build_model


def test_kd_loss_is_batchmean_kl_scaled_by_t_squared():
    # Prepare: two rows, two classes, T = 2.
    student = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    teacher = torch.tensor([[0.8, 0.2], [0.5, 0.5]])
    t = 2.0
    # Hand computation: q = softmax(s / T); p_T = p^(1/T) normalised; KL summed per row,
    # averaged over the 2 rows, times T^2.
    q1 = [math.exp(1) / (math.exp(1) + 1), 1 / (math.exp(1) + 1)]
    q2 = [0.5, 0.5]
    p1 = [
        math.sqrt(0.8) / (math.sqrt(0.8) + math.sqrt(0.2)),
        math.sqrt(0.2) / (math.sqrt(0.8) + math.sqrt(0.2)),
    ]
    p2 = [0.5, 0.5]
    kl1 = sum(p * math.log(p / q) for p, q in zip(p1, q1, strict=True))
    kl2 = sum(p * math.log(p / q) for p, q in zip(p2, q2, strict=True))
    expected = (kl1 + kl2) / 2 * t**2
    # Execute
    got = kd_loss(student, teacher, t).item()
    # Assert
    assert got == pytest.approx(expected, rel=1e-6)


def test_soften_matches_softmax_of_scaled_logits():
    logits = torch.tensor([[1.0, 2.0, -1.0]])
    probs = torch.softmax(logits, 1)
    assert torch.allclose(soften(probs, 3.0), torch.softmax(logits / 3.0, 1), atol=1e-6)


def test_train_distill_moves_student_towards_teacher():
    rng = np.random.default_rng(0)
    x = rng.random((64, 8, 8), dtype=np.float32)
    teacher = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 64)]
    model = build_model("mlp", (8, 8), 10, seed=1)
    opt = make_optimizer(model, 0.1)
    before = np.mean(predict_probs(model, x).argmax(1) == teacher.argmax(1))
    train_distill(
        model,
        opt,
        x,
        teacher,
        epochs=30,
        batch_size=16,
        temperature=1.0,
        generator=torch.Generator().manual_seed(0),
    )
    after = np.mean(predict_probs(model, x).argmax(1) == teacher.argmax(1))
    assert after > before + 0.5


def test_mix_is_the_same_convex_combination_of_inputs_and_soft_labels():
    x = torch.tensor([[0.0, 2.0], [4.0, 6.0], [8.0, 10.0]])
    p = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    xm, pm = mix(x, p, 0.25, torch.tensor([2, 0, 1]))
    assert torch.allclose(xm, torch.tensor([[6.0, 8.0], [1.0, 3.0], [5.0, 7.0]]))
    assert torch.allclose(pm, torch.tensor([[0.625, 0.375], [0.75, 0.25], [0.125, 0.875]]))
    assert torch.allclose(pm.sum(1), torch.ones(3))


def test_mixup_changes_the_distillation_and_zero_leaves_it_unchanged():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 6)).astype(np.float32)
    p = rng.dirichlet(np.ones(3), size=40).astype(np.float32)

    def run(**kw):
        model = torch.nn.Linear(6, 3)
        with torch.no_grad():
            model.weight.zero_()
            model.bias.zero_()
        opt = make_optimizer(model, 0.1)
        g = torch.Generator().manual_seed(5)
        train_distill(model, opt, x, p, epochs=2, batch_size=8, temperature=1.0, generator=g, **kw)
        return model.weight.detach().clone()

    assert torch.equal(run(), run(mixup=0.0))
    assert not torch.allclose(run(), run(mixup=0.4))
    assert torch.equal(run(mixup=0.4), run(mixup=0.4))  # seeded from the loop's generator


def test_cosine_factor_falls_from_one_through_a_half_towards_zero():
    assert cosine_factor(0, 10) == 1.0
    assert cosine_factor(5, 10) == pytest.approx(0.5)
    assert 0 < cosine_factor(9, 10) < 0.03
    factors = [cosine_factor(t, 10) for t in range(10)]
    assert factors == sorted(factors, reverse=True)


def test_cosine_schedule_anneals_each_call_and_restores_the_rate():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 6)).astype(np.float32)
    p = rng.dirichlet(np.ones(3), size=40).astype(np.float32)
    seen = []

    class Recording(torch.optim.SGD):
        def step(self, closure=None):
            seen.append(self.param_groups[0]["lr"])
            return super().step(closure)

    def run(cosine):
        model = torch.nn.Linear(6, 3)
        opt = Recording(model.parameters(), lr=0.1, momentum=0.9)
        g = torch.Generator().manual_seed(5)
        train_distill(
            model, opt, x, p, epochs=2, batch_size=8, temperature=1.0, generator=g, cosine=cosine
        )
        assert opt.param_groups[0]["lr"] == 0.1  # the next round starts at the full rate
        return model.weight.detach().clone()

    constant = run(False)
    assert seen == [0.1] * 10  # 2 epochs of 5 batches
    seen.clear()
    annealed = run(True)
    assert seen == pytest.approx([0.1 * cosine_factor(t, 10) for t in range(10)])
    assert not torch.allclose(constant, annealed)


def _joint_fixture():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)  # private labels follow feature 0
    x_pub = rng.normal(size=(48, 6)).astype(np.float32)
    x_pub[:, 2] += 4.0  # public rows lie apart from the private ones
    pub = np.eye(3, dtype=np.float32)[(x_pub[:, 1] > 0).astype(int) + 1]  # feature 1, classes 1-2
    return x, y, x_pub, pub


def test_train_joint_keeps_the_model_on_the_public_soft_labels_that_private_training_forgets():
    x, y, x_pub, pub = _joint_fixture()

    def agreement(joint: bool) -> float:
        torch.manual_seed(0)
        model = torch.nn.Linear(6, 3)
        opt = make_optimizer(model, 0.1)
        gen = torch.Generator().manual_seed(0)
        if joint:
            kw = {"weight": 1.0, "temperature": 1.0}
            train_joint(model, opt, x, y, x_pub, pub, epochs=20, batch_size=16, generator=gen, **kw)
        else:
            train_supervised(model, opt, x, y, epochs=20, batch_size=16, generator=gen)
        return float(np.mean(predict_probs(model, x_pub).argmax(1) == pub.argmax(1)))

    # Private data alone never predicts class 2 on purpose; the joint term teaches the public rule.
    assert agreement(joint=True) > 0.8
    assert agreement(joint=True) > agreement(joint=False) + 0.3


def test_train_joint_still_learns_the_private_labels():
    torch.manual_seed(0)
    x, y, x_pub, pub = _joint_fixture()
    model = torch.nn.Linear(6, 3)
    opt = make_optimizer(model, 0.1)
    gen = torch.Generator().manual_seed(0)
    loss = train_joint(
        model,
        opt,
        x,
        y,
        x_pub,
        pub,
        weight=1.0,
        epochs=20,
        batch_size=16,
        temperature=1.0,
        generator=gen,
    )
    assert np.mean(predict_probs(model, x).argmax(1) == y) > 0.8
    assert 0 < loss < math.log(3)


@pytest.mark.parametrize(
    ("weight", "n_pub", "n_probs", "match"),
    [
        (-1.0, 4, 4, "weight must be >= 0"),
        (1.0, 4, 3, "same non-zero length"),
        (1.0, 0, 0, "same non-zero length"),
    ],
)
def test_train_joint_refuses_a_negative_weight_and_mismatched_public_rows(
    weight, n_pub, n_probs, match
):
    model = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match=match):
        train_joint(
            model,
            make_optimizer(model, 0.1),
            np.zeros((4, 2), np.float32),
            np.zeros(4, np.int64),
            np.zeros((n_pub, 2), np.float32),
            np.full((n_probs, 2), 0.5, np.float32),
            weight=weight,
            epochs=1,
            batch_size=2,
            temperature=1.0,
            generator=torch.Generator().manual_seed(0),
        )
