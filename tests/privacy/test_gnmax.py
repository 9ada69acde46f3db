"""PATE aggregators on crafted vote histograms: exactness, consensus, abstention, frequencies."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from fedkd.privacy.gnmax import confident_gnmax, gnmax, release_for_round


def _random_histograms(rng: np.random.Generator, n: int, classes: int, teachers: int):
    """(n, classes) vote counts of ``teachers`` one-hot votes each, with a unique maximum."""
    rows: list[np.ndarray] = []
    while len(rows) < n:
        votes = rng.multinomial(teachers, rng.dirichlet(np.ones(classes)))
        top2 = np.sort(votes)[-2:]
        if top2[1] > top2[0]:  # redraw rows whose maximum is tied
            rows.append(votes)
    return np.stack(rows).astype(np.int64)


def test_gnmax_with_tiny_noise_is_the_exact_argmax() -> None:
    # Prepare
    rng = np.random.default_rng(0)
    votes = np.array([[5, 1, 0], [0, 2, 7], [3, 4, 0], [0, 0, 1]])

    # Execute
    labels = gnmax(votes, 1e-6, rng)

    # Assert
    np.testing.assert_array_equal(labels, [0, 2, 1, 2])
    assert labels.dtype == np.int64


def test_gnmax_with_tiny_noise_matches_argmax_on_random_histograms() -> None:
    # Prepare
    rng = np.random.default_rng(1)
    votes = _random_histograms(rng, 40, 10, 50)

    # Execute
    labels = gnmax(votes, 1e-6, rng)

    # Assert
    np.testing.assert_array_equal(labels, votes.argmax(axis=1))


def test_gnmax_two_class_flip_rate_matches_the_noise_level() -> None:
    # Prepare: votes (52, 48): P(label = 1) = P(e1 - e0 > 4) = Φ(-4 / (σ√2)).
    rng = np.random.default_rng(2)
    n, sigma = 20_000, 4.0
    votes = np.tile([52, 48], (n, 1))
    expected = norm.cdf(-4.0 / (sigma * math.sqrt(2)))

    # Execute
    rate = float(np.mean(gnmax(votes, sigma, rng) == 1))

    # Assert
    assert abs(rate - expected) <= 4 * math.sqrt(expected * (1 - expected) / n)


def test_confident_gnmax_always_answers_a_strong_consensus() -> None:
    # Prepare: 90 of 100 votes; T = 60 is 6 σ1 below the max count.
    rng = np.random.default_rng(3)
    votes = np.tile([90, 4, 3, 3], (1000, 1))

    # Execute
    labels, answered = confident_gnmax(votes, 60.0, 5.0, 5.0, rng)

    # Assert
    assert answered.all()
    assert answered.dtype == np.bool_
    np.testing.assert_array_equal(labels, 0)


def test_confident_gnmax_always_abstains_on_a_flat_histogram_with_a_high_threshold() -> None:
    # Prepare: max count 10; T = 60 is 10 σ1 above it.
    rng = np.random.default_rng(4)
    votes = np.full((1000, 10), 10)

    # Execute
    labels, answered = confident_gnmax(votes, 60.0, 5.0, 5.0, rng)

    # Assert
    assert not answered.any()
    np.testing.assert_array_equal(labels, -1)
    assert labels.dtype == np.int64


def test_confident_gnmax_answer_frequency_matches_the_normal_tail_probability() -> None:
    # Prepare: max count 50, T = 55, σ1 = 10 ⇒ P(answer) = 1 - Φ(0.5).
    rng = np.random.default_rng(5)
    n = 20_000
    votes = np.tile([50, 30, 20], (n, 1))
    expected = norm.sf((55.0 - 50.0) / 10.0)

    # Execute
    _, answered = confident_gnmax(votes, 55.0, 10.0, 1.0, rng)

    # Assert
    assert abs(answered.mean() - expected) <= 4 * math.sqrt(expected * (1 - expected) / n)


def test_confident_gnmax_labels_exactly_the_answered_queries() -> None:
    # Prepare
    rng = np.random.default_rng(6)
    votes = _random_histograms(rng, 500, 5, 40)

    # Execute
    labels, answered = confident_gnmax(votes, 20.0, 4.0, 1e-6, rng)

    # Assert
    assert 0 < answered.sum() < len(votes)
    np.testing.assert_array_equal(labels[answered], votes.argmax(axis=1)[answered])
    np.testing.assert_array_equal(labels[~answered], -1)


def test_aggregators_are_deterministic_given_a_seeded_generator() -> None:
    # Prepare
    votes = _random_histograms(np.random.default_rng(7), 200, 10, 30)

    # Execute
    a = confident_gnmax(votes, 12.0, 3.0, 3.0, np.random.default_rng(99))
    b = confident_gnmax(votes, 12.0, 3.0, 3.0, np.random.default_rng(99))

    # Assert
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.parametrize(
    "votes", [np.array([1, 2, 3]), np.array([[1, -1], [2, 0]]), np.array([[np.nan, 1.0]])]
)
def test_invalid_vote_histograms_are_refused(votes) -> None:
    # Execute / Assert
    with pytest.raises(ValueError, match="votes"):
        gnmax(votes, 1.0, np.random.default_rng(0))


def test_non_positive_noise_is_refused() -> None:
    # Execute / Assert
    with pytest.raises(ValueError, match="sigma1"):
        confident_gnmax(np.ones((2, 2)), 1.0, 0.0, 1.0, np.random.default_rng(0))


def test_release_for_round_records_answered_and_checked_queries() -> None:
    # Execute
    release = release_for_round(2, 40.0, 286, 250, sigma1=150.0, checked=640)

    # Assert
    assert (release.mechanism, release.scope, release.subject) == ("pate", "client", "server")
    assert (release.noise_multiplier, release.steps) == (40.0, 286)
    assert (release.sigma_threshold, release.threshold_checks) == (150.0, 640)
    assert (release.sample_rate, release.population) == (1.0, 250)
