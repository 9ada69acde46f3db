"""Model registry: shapes, seeding, Opacus compatibility, clear errors."""

from __future__ import annotations

import pytest
import torch
from opacus.validators import ModuleValidator

from fedkd.models import MODELS, ModelError, build_model


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("shape", [(8, 8), (28, 28), (1, 12, 12)])
def test_models_map_inputs_to_class_logits(name, shape):
    model = build_model(name, shape, 7, seed=0)
    out = model(torch.zeros(3, *shape))
    assert out.shape == (3, 7)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_models_are_opacus_compatible(name):
    assert ModuleValidator.validate(build_model(name, (8, 8), 10, seed=0), strict=False) == []


def test_same_seed_same_weights_and_global_rng_untouched():
    state = torch.random.get_rng_state()
    a = build_model("cnn", (8, 8), 10, seed=3)
    b = build_model("cnn", (8, 8), 10, seed=3)
    c = build_model("cnn", (8, 8), 10, seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a.parameters(), c.parameters(), strict=True))


def test_cnn_on_flat_features_is_a_clear_error():
    with pytest.raises(ModelError, match="needs image inputs"):
        build_model("cnn", (64,), 10, seed=0)


def test_unknown_model_is_named():
    with pytest.raises(ModelError, match="unknown model 'resnet'"):
        build_model("resnet", (8, 8), 10, seed=0)
