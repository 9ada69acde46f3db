"""Server distillation stopped early on held-out proxy rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fedkd.distill import kd_loss, make_optimizer
from fedkd.early_stop import holdout_split, train_distill_early_stop

LOOP = {"batch_size": 16, "temperature": 1.0}


def _problem(n=80, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5)).astype(np.float32)
    logits = x @ rng.normal(size=(5, 3))
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return x, p.astype(np.float32)


def _model(seed=0):
    model, g = nn.Linear(5, 3), torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.weight.copy_(0.1 * torch.randn(3, 5, generator=g))
        model.bias.zero_()
    return model


def test_holdout_split_is_disjoint_covers_every_row_and_keeps_both_sides():
    train, held = holdout_split(50, 0.1, torch.Generator().manual_seed(0))
    assert len(held) == 5 and len(train) == 45
    assert sorted([*train, *held]) == list(range(50))
    train, held = holdout_split(2, 0.9, torch.Generator().manual_seed(0))
    assert len(train) == 1 and len(held) == 1
    with pytest.raises(ValueError, match="distill.holdout_fraction"):
        holdout_split(10, 0.0, torch.Generator())


def test_the_model_ends_with_the_best_epochs_weights():
    x, p = _problem()
    model = _model()
    opt = make_optimizer(model, 0.5)
    best, epoch = train_distill_early_stop(
        model, opt, x, p, max_epochs=30, patience=3, holdout_fraction=0.2,
        generator=torch.Generator().manual_seed(3), **LOOP,
    )  # fmt: skip
    assert epoch >= 1  # a consistent teacher: distillation lowers the held-out loss
    _, held = holdout_split(len(x), 0.2, torch.Generator().manual_seed(3))  # the same draw
    with torch.no_grad():
        final = float(kd_loss(model(torch.from_numpy(x[held])), torch.from_numpy(p[held]), 1.0))
    assert final == pytest.approx(best, rel=1e-5)


def test_no_improvement_stops_after_patience_and_keeps_the_weights_it_came_with():
    x, p = _problem()
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=50.0)  # diverges: every epoch is worse
    _, epoch = train_distill_early_stop(
        model, opt, x, p, max_epochs=40, patience=2, holdout_fraction=0.25,
        generator=torch.Generator().manual_seed(1), **LOOP,
    )  # fmt: skip
    assert epoch == 0
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
