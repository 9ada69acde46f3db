"""Public PCA features: whitening, determinism, frozen under DP-SGD, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedkd.clientdata import ClientData
from fedkd.config import from_dict
from fedkd.features import PCAFeatures, build_client_model, fit_pca, split_features
from fedkd.local import RoundTask, local_round
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


def _images(n: int = 120, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 0.2, size=(n, 12, 12)).astype(np.float32)
    x[: n // 2, 3:9, 5:7] += 0.8  # vertical bars in half, horizontal in the other half
    x[n // 2 :, 5:7, 3:9] += 0.8
    return x


def test_scattering_features_feed_a_flat_head_and_only_the_head_trains():
    model = build_client_model("linear", (12, 12), 3, seed=0, feature_map="scattering")
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["1.1.weight", "1.1.bias"]
    assert model[1][1].in_features == 81 * 3 * 3
    assert model(torch.rand(4, 12, 12)).shape == (4, 3)
    assert not any("transform" in k for k in model.state_dict())  # filters are rebuilt


def test_scattering_then_pca_is_whitened_on_the_public_data():
    x = _images()
    model = build_client_model(
        "linear", (12, 12), 3, seed=0, x_public=x, public_features=6, feature_map="scattering"
    )
    z = model[0](torch.from_numpy(x)).numpy().astype(np.float64)  # (120, 6)
    np.testing.assert_allclose(np.cov(z, rowvar=False, bias=True), np.eye(6), atol=1e-3)


def test_transformed_arrays_are_cached_and_equal_the_module_output():
    x = _images()
    features, _ = split_features(
        build_client_model(
            "linear", (12, 12), 3, seed=0, x_public=x, public_features=5, feature_map="scattering"
        )
    )
    private = _images(30, seed=4)
    first = features.transform_array(private)
    assert features.transform_array(private.copy()) is first  # same content, one transform
    np.testing.assert_allclose(first, features(torch.from_numpy(private)).numpy(), atol=1e-5)
    assert features.transform_array(x).shape == (120, 5)


def test_a_round_on_cached_features_predicts_like_the_whole_model():
    x_proxy, x_private = _images(), _images(40, seed=2)
    y = np.repeat(np.arange(2), 20)
    data = ClientData(x_private, y, x_proxy, (12, 12), 2)
    cfg = from_dict(
        {
            "clients": {
                "models": ["linear"],
                "public_features": 4,
                "feature_map": "scattering",
                "local_epochs": 2,
                "digest_epochs": 0,
                "lr": 0.1,
            },
            "distill": {"codec": "fp32"},
        }
    )
    task = RoundTask(server_round=1, proxy_idx=np.arange(0, 120, 7))
    result = local_round(cfg, data, 0, task, None)
    model = build_client_model(
        "linear",
        (12, 12),
        2,
        seed=1,
        x_public=x_proxy,
        public_features=4,
        feature_map="scattering",
    )
    model.load_state_dict(result.state.model)  # the head trained on cached features
    full = torch.softmax(model(torch.from_numpy(x_proxy[task.proxy_idx])), dim=1).detach()
    np.testing.assert_allclose(result.probs, full.numpy(), atol=1e-5)
    assert result.metrics["local-accuracy"] > 0.9  # bars vs bars: the head learned


def test_unknown_feature_map_and_small_images_are_clear_errors():
    with pytest.raises(ModelError, match="clients.feature_map must be pixels or scattering"):
        build_client_model("linear", (12, 12), 3, seed=0, feature_map="wavelets")
    with pytest.raises(ModelError, match="clients.feature_map=scattering: .*at least 8 x 8"):
        build_client_model("linear", (4, 4), 3, seed=0, feature_map="scattering")
