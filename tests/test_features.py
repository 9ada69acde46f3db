"""Public PCA features: whitening, determinism, frozen under DP-SGD, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedkd.features import PCAFeatures, build_client_model, fit_pca
from fedkd.models import ModelError
from fedkd.privacy.dpsgd import DPSGDState, dp_train


def _public(n: int = 200, d: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scales = np.linspace(3.0, 0.1, d)  # distinct variances: a well-defined PCA
    return (rng.standard_normal((n, d)) * scales + 5.0).astype(np.float32).reshape(n, 4, 4)


def test_pca_features_are_centred_whitened_and_uncorrelated_on_the_public_data():
    x = _public()
    feats = fit_pca(x, 5)
    z = feats(torch.from_numpy(x)).numpy().astype(np.float64)  # (200, 5)
    assert z.shape == (200, 5)
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(np.cov(z, rowvar=False, bias=True), np.eye(5), atol=1e-3)


def test_pca_directions_follow_the_variance_and_signs_are_fixed():
    x = _public()
    a, b = fit_pca(x, 3), fit_pca(x.copy(), 3)
    assert torch.equal(a.components, b.components)
    assert torch.all(a.scale[:-1] >= a.scale[1:])  # decreasing variance
    # The largest-variance input coordinate (0) dominates the first direction.
    assert int(torch.argmax(a.components[0].abs())) == 0


def test_features_are_buffers_not_parameters_and_survive_state_dict():
    model = build_client_model("linear", (4, 4), 3, seed=0, x_public=_public(), public_features=4)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["1.1.weight", "1.1.bias"]  # only the head
    fresh = build_client_model(
        "linear", (4, 4), 3, seed=1, x_public=_public(seed=9), public_features=4
    )
    fresh.load_state_dict(model.state_dict())
    x = torch.randn(6, 4, 4)
    assert torch.equal(fresh(x), model(x))


def test_dp_sgd_leaves_the_public_projection_untouched():
    x_pub = _public()
    model = build_client_model("linear", (4, 4), 3, seed=0, x_public=x_pub, public_features=4)
    before = {k: v.clone() for k, v in model[0].state_dict().items()}
    head_before = model[1][1].weight.detach().clone()
    x = torch.from_numpy(_public(40, seed=3))
    y = torch.randint(0, 3, (40,), generator=torch.Generator().manual_seed(0))
    state = DPSGDState(noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=1.0)
    dp_train(
        model,
        x,
        y,
        state=state,
        epochs=2,
        lr=0.5,
        batch_size=64,
        generator=torch.Generator().manual_seed(1),
    )
    for k, v in model[0].state_dict().items():
        assert torch.equal(v, before[k])
    assert not torch.equal(model[1][1].weight, head_before)


def test_zero_public_features_is_the_plain_model():
    a = build_client_model("mlp", (4, 4), 3, seed=2)
    assert not any(isinstance(m, PCAFeatures) for m in a.modules())


@pytest.mark.parametrize("k", [0, 17, 500])
def test_out_of_range_component_count_is_a_clear_error(k):
    with pytest.raises(ModelError, match="clients.public_features"):
        fit_pca(_public(), k)


def test_image_models_on_pca_features_are_refused_with_the_key_named():
    with pytest.raises(ModelError, match="clients.public_features=4: model 'cnn'"):
        build_client_model("cnn", (4, 4), 3, seed=0, x_public=_public(), public_features=4)


def test_degenerate_public_data_is_refused():
    flat = np.zeros((50, 4, 4), dtype=np.float32)
    flat[:, 0, 0] = np.arange(50)  # one direction of variance only
    with pytest.raises(ModelError, match="fewer than 2 directions"):
        fit_pca(flat, 2)
