"""Client-level central Gaussian mechanism: clipping, sensitivity, noise calibration, projection."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import chi2, norm

from fedkd.privacy.gaussian import (
    clip_matrix,
    gaussian_aggregate,
    noisy_sum,
    project_rows_to_simplex,
    release_for_round,
    secure_rng,
)


def _probability_matrices(rng: np.random.Generator, k: int, n: int, c: int) -> np.ndarray:
    logits = rng.normal(size=(k, n, c))
    e = np.exp(logits - logits.max(axis=2, keepdims=True))
    return e / e.sum(axis=2, keepdims=True)


def test_clip_matrix_brings_a_large_matrix_to_exactly_the_clip_norm() -> None:
    # Prepare
    m = np.random.default_rng(0).normal(size=(50, 10)) * 3.0

    # Execute
    clipped = clip_matrix(m, 2.5)

    # Assert
    assert np.linalg.norm(clipped) == pytest.approx(2.5, rel=1e-12)
    np.testing.assert_allclose(clipped / np.linalg.norm(clipped), m / np.linalg.norm(m))


def test_clip_matrix_leaves_a_small_matrix_unchanged_and_does_not_mutate_its_input() -> None:
    # Prepare
    m = np.full((4, 3), 0.1)
    original = m.copy()

    # Execute
    clipped = clip_matrix(m, 10.0)
    clipped[0, 0] = 99.0

    # Assert
    np.testing.assert_array_equal(m, original)
    np.testing.assert_array_equal(clip_matrix(m, 10.0), original)


def test_adding_one_adversarial_client_moves_the_clipped_sum_by_at_most_the_clip_norm() -> None:
    # Prepare: worst case for add/remove-one-client: an arbitrary (huge) extra matrix.
    rng = np.random.default_rng(1)
    clip = 1.5
    clients = [clip_matrix(p, clip) for p in _probability_matrices(rng, 8, 30, 10)]
    adversary = clip_matrix(rng.normal(size=(30, 10)) * 1e6, clip)

    # Execute
    without = np.sum(clients, axis=0)
    with_adversary = without + adversary

    # Assert
    assert np.linalg.norm(with_adversary - without) <= clip * (1 + 1e-12)


def test_noise_of_noisy_sum_has_std_sigma_times_clip_norm_within_a_chi_square_interval() -> None:
    # Prepare: 2000 x 10 = 20,000 noise coordinates.
    rng = np.random.default_rng(2024)
    clip, sigma = 0.7, 3.0
    clipped = np.stack([clip_matrix(p, clip) for p in _probability_matrices(rng, 5, 2000, 10)])
    exact = clipped.sum(axis=0)

    # Execute
    noise = (noisy_sum(clipped, clip, sigma, rng) - exact).ravel()

    # Assert: (n) s² / (σS)² ~ χ²(n) with known mean 0; 99.9 % two-sided interval.
    n = noise.size
    target_var = (sigma * clip) ** 2
    statistic = float(np.sum(noise**2)) / target_var
    assert chi2.ppf(0.0005, n) <= statistic <= chi2.ppf(0.9995, n)
    z_mean = abs(noise.mean()) / (sigma * clip / np.sqrt(n))
    assert z_mean <= norm.ppf(0.9995)


def test_a_broken_noise_scale_would_fail_the_chi_square_interval() -> None:
    # Prepare: same statistic, noise drawn at 0.95 σS: the test must be able to fail.
    rng = np.random.default_rng(7)
    n, target_var = 20_000, 4.0
    noise = rng.normal(0.0, 0.95 * 2.0, size=n)

    # Execute
    statistic = float(np.sum(noise**2)) / target_var

    # Assert
    assert not chi2.ppf(0.0005, n) <= statistic <= chi2.ppf(0.9995, n)


def test_noisy_sum_refuses_matrices_that_were_not_clipped() -> None:
    # Prepare
    stack = np.ones((2, 3, 3))  # norm 3 each

    # Execute / Assert
    with pytest.raises(ValueError, match="exceed clip_norm"):
        noisy_sum(stack, 1.0, 1.0, np.random.default_rng(0))


def test_gaussian_aggregate_is_deterministic_given_a_seeded_generator() -> None:
    # Prepare
    preds = _probability_matrices(np.random.default_rng(3), 6, 20, 5)

    # Execute
    a = gaussian_aggregate(preds, 1.0, 1.2, np.random.default_rng(11))
    b = gaussian_aggregate(preds, 1.0, 1.2, np.random.default_rng(11))
    c = gaussian_aggregate(preds, 1.0, 1.2, np.random.default_rng(12))

    # Assert
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_gaussian_aggregate_returns_probability_rows() -> None:
    # Prepare
    preds = _probability_matrices(np.random.default_rng(4), 4, 50, 10)

    # Execute
    out = gaussian_aggregate(preds, 1.0, 5.0, np.random.default_rng(5))

    # Assert
    assert out.shape == (50, 10)
    assert np.all(out >= 0)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-12)


def test_gaussian_aggregate_with_negligible_noise_is_the_mean_prediction() -> None:
    # Prepare: matrices already inside the clip ball, so clipping changes nothing.
    preds = _probability_matrices(np.random.default_rng(6), 3, 8, 4)

    # Execute
    out = gaussian_aggregate(preds, 10.0, 1e-12, np.random.default_rng(0))

    # Assert
    np.testing.assert_allclose(out, preds.mean(axis=0), atol=1e-9)


def test_gaussian_aggregate_with_no_replies_still_releases_noise_rows() -> None:
    # Prepare
    empty = np.zeros((0, 6, 3))

    # Execute
    out = gaussian_aggregate(empty, 1.0, 1.0, np.random.default_rng(8))

    # Assert
    assert out.shape == (6, 3)
    np.testing.assert_allclose(out.sum(axis=1), 1.0)


def test_projection_clips_negatives_renormalises_and_is_uniform_for_all_non_positive_rows():
    # Prepare
    m = np.array([[2.0, -1.0, 2.0], [-3.0, -0.5, 0.0]])

    # Execute
    out = project_rows_to_simplex(m)

    # Assert
    np.testing.assert_allclose(out, [[0.5, 0.0, 0.5], [1 / 3, 1 / 3, 1 / 3]])
    np.testing.assert_allclose(project_rows_to_simplex(7.0 * m), out)  # scale invariant


def test_secure_rng_draws_independent_streams() -> None:
    # Execute
    a, b = secure_rng(), secure_rng()

    # Assert
    assert isinstance(a, np.random.Generator)
    assert not np.array_equal(a.normal(size=8), b.normal(size=8))


def test_release_for_round_records_one_client_level_gaussian_step() -> None:
    # Execute
    release = release_for_round(4, 1.3, 0.2, 50)

    # Assert
    assert (release.mechanism, release.scope, release.subject) == ("gaussian", "client", "server")
    assert (release.round, release.noise_multiplier, release.sample_rate) == (4, 1.3, 0.2)
    assert (release.steps, release.population) == (1, 50)
