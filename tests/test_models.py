"""Model registry: shapes, seeding, Opacus compatibility, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from opacus.validators import ModuleValidator
from torch import nn

from fedkd.distill import make_optimizer, train_supervised
from fedkd.models import MODELS, ModelError, SmallCNN, SmallCNN1d, build_model


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("shape", [(8, 8), (28, 28), (1, 12, 12), (30,), (4,)])
def test_models_map_inputs_to_class_logits(name, shape):
    model = build_model(name, shape, 7, seed=0)
    out = model(torch.zeros(3, *shape))
    assert out.shape == (3, 7)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("shape", [(8, 8), (30,)])
def test_models_are_opacus_compatible(name, shape):
    assert ModuleValidator.validate(build_model(name, shape, 10, seed=0), strict=False) == []


def test_same_seed_same_weights_and_global_rng_untouched():
    state = torch.random.get_rng_state()
    a = build_model("cnn", (8, 8), 10, seed=3)
    b = build_model("cnn", (8, 8), 10, seed=3)
    c = build_model("cnn", (8, 8), 10, seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a.parameters(), c.parameters(), strict=True))


def test_cnn_on_images_is_the_2d_cnn_with_the_same_weights_as_before():
    model = build_model("cnn", (8, 8), 10, seed=3)
    assert isinstance(model, SmallCNN)
    assert any(isinstance(m, nn.Conv2d) for m in model.modules())
    with torch.random.fork_rng(devices=[]):  # what build_model did before flat inputs
        torch.manual_seed(3)
        direct = SmallCNN((8, 8), 10)
    pairs = zip(model.parameters(), direct.parameters(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)


def test_cnn_on_flat_features_is_a_1d_cnn_that_learns():
    x = np.random.default_rng(0).normal(size=(200, 16)).astype(np.float32)
    y = (x[:, :8].sum(axis=1) > 0).astype(np.int64)
    model = build_model("cnn", (16,), 2, seed=0)
    assert isinstance(model, SmallCNN1d)
    assert any(isinstance(m, nn.Conv1d) for m in model.modules())
    before = float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())
    train_supervised(
        model,
        make_optimizer(model, 0.05),
        x,
        y,
        epochs=20,
        batch_size=32,
        generator=torch.Generator().manual_seed(0),
    )
    after = float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())
    assert after > 0.9 > before


def test_cnn_on_too_few_features_is_a_clear_error():
    with pytest.raises(ModelError, match="model 'cnn' needs at least 4 features, got 3"):
        build_model("cnn", (3,), 2, seed=0)


def test_unknown_model_is_named():
    with pytest.raises(ModelError, match="unknown model 'resnet'"):
        build_model("resnet", (8, 8), 10, seed=0)
