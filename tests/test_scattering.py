"""The scattering transform: shapes, filters, invariances and orientation selectivity."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedkd.scattering import Scattering2D, gabor, morlet, num_channels


def test_channel_count_follows_the_scattering_formula():
    assert num_channels(2, 8) == 81  # 1 + 16 + 64
    assert num_channels(3, 4) == 1 + 12 + 16 * 3
    s = Scattering2D((1, 28, 28))
    assert s.output_shape == (81, 7, 7)
    out = s(torch.rand(3, 28, 28))
    assert out.shape == (3, 81, 7, 7)
    assert Scattering2D((8, 8))(torch.rand(2, 8, 8)).shape == (2, 81, 2, 2)
    assert Scattering2D((9, 11))(torch.rand(2, 9, 11)).shape == (2, 81, 3, 3)


def test_wavelets_have_zero_mean_and_the_lowpass_sums_to_one():
    psi = morlet((32, 32), 0.8, math.pi / 4, 0.75 * math.pi, 0.5)
    assert abs(psi.sum()) < 1e-9 * np.abs(psi).sum()
    phi = gabor((32, 32), 3.2, 0.0, 0.0, 1.0)
    assert phi.sum().real == pytest.approx(1.0, abs=1e-6)


def test_a_constant_image_has_only_its_average_as_coefficient():
    out = Scattering2D((16, 16))(torch.full((1, 16, 16), 0.7))
    np.testing.assert_allclose(out[0, 0].numpy(), 0.7, atol=1e-5)  # order 0: the mean
    assert out[0, 1:].abs().max() < 1e-4  # wavelets see no variation


def test_coefficients_barely_move_under_a_one_pixel_shift():
    rng = np.random.default_rng(0)
    img = np.zeros((28, 28), np.float32)
    img[8:20, 10:18] = rng.uniform(0.5, 1.0, size=(12, 8))  # a textured patch
    shifted = np.roll(img, 1, axis=1)
    s = Scattering2D((28, 28))
    a, b = s(torch.from_numpy(img[None])), s(torch.from_numpy(shifted[None]))
    pixel_change = np.linalg.norm(shifted - img) / np.linalg.norm(img)
    feature_change = float((a - b).norm() / a.norm())
    assert pixel_change > 0.5
    assert feature_change < 0.4 * pixel_change  # pixels themselves: ratio 1


@pytest.mark.parametrize(("axis", "orientation"), [(0, 0), (1, 4)])
def test_first_order_energy_peaks_at_the_orientation_of_the_stripes(axis, orientation):
    grid = np.arange(32, dtype=np.float32)
    wave = np.cos(0.75 * math.pi * grid)  # the centre frequency of scale 0
    img = np.broadcast_to(wave[:, None] if axis == 0 else wave[None, :], (32, 32))
    out = Scattering2D((32, 32))(torch.from_numpy(np.ascontiguousarray(img))[None])
    energy = out[0, 1:9].pow(2).sum(dim=(1, 2))  # order 1, scale 0, 8 orientations
    assert int(energy.argmax()) == orientation


def test_images_too_small_for_the_scales_are_refused():
    with pytest.raises(ValueError, match="at least 8 x 8 pixels"):
        Scattering2D((6, 6))
    with pytest.raises(ValueError, match="input shape"):
        Scattering2D((64,))
