"""Teacher aggregation rules against hand-computed examples, robustness and input checks."""

from __future__ import annotations

import numpy as np
import pytest

from fedkd.aggregate import (
    AGGREGATORS,
    aggregate,
    confidence,
    dsfl,
    mean_logits,
    mean_probs,
    median,
    power,
    trimmed_mean,
    votes,
    weighted,
)

# Two clients, one proxy row, three classes (used by most hand-computed examples).
A = [0.5, 0.3, 0.2]
B = [0.1, 0.6, 0.3]
TWO = np.array([[A], [B]])  # (K=2, N=1, C=3)


def _entropy(p: np.ndarray) -> np.ndarray:
    return -(p * np.log(np.clip(p, 1e-30, None))).sum(axis=-1)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


# -- hand-computed examples ------------------------------------------------------------------
def test_mean_probs_is_the_plain_mean_without_weights() -> None:
    # Prepare: (A + B) / 2 = [0.3, 0.45, 0.25]
    expected = np.array([[0.3, 0.45, 0.25]])

    # Execute
    out = mean_probs(TWO)

    # Assert
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_mean_probs_uses_weights_when_given() -> None:
    # Prepare: (3 A + 1 B) / 4 = [1.6, 1.5, 0.9] / 4
    expected = np.array([[0.4, 0.375, 0.225]])

    # Execute
    out = mean_probs(TWO, np.array([3.0, 1.0]))

    # Assert
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_weighted_mean_by_example_counts() -> None:
    # Prepare: (1 A + 3 B) / 4 = [0.8, 2.1, 1.1] / 4
    expected = np.array([[0.2, 0.525, 0.275]])

    # Execute
    out = weighted(TWO, np.array([10, 30]))

    # Assert
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_mean_logits_is_the_normalized_geometric_mean() -> None:
    # Prepare: sqrt([0.8*0.2, 0.1*0.4, 0.1*0.4]) = [0.4, 0.2, 0.2] -> / 0.8
    preds = np.array([[[0.8, 0.1, 0.1]], [[0.2, 0.4, 0.4]]])
    expected = np.array([[0.5, 0.25, 0.25]])

    # Execute
    out = mean_logits(preds)

    # Assert
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_dsfl_sharpens_the_mean_with_temperature() -> None:
    # Prepare: mean [0.3, 0.45, 0.25]; T = 0.5 squares it: [0.09, 0.2025, 0.0625] / 0.355
    expected = np.array([[36 / 142, 81 / 142, 25 / 142]])

    # Execute
    out = dsfl(TWO, temperature=0.5)

    # Assert
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_power_with_default_beta_squares_the_mean() -> None:
    # Prepare: beta = 2 on the mean [0.3, 0.45, 0.25], as in the DS-FL example
    expected = np.array([[36 / 142, 81 / 142, 25 / 142]])

    # Execute
    out = power(TWO)

    # Assert
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_power_with_beta_one_is_the_mean() -> None:
    # Prepare
    expected = np.array([[0.3, 0.45, 0.25]])

    # Execute
    out = power(TWO, beta=1.0)

    # Assert
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_confidence_weights_rows_by_their_max_probability() -> None:
    # Prepare: confidences 0.5 (A) and 0.6 (B): (0.5 A + 0.6 B) / 1.1
    expected = np.array([[0.31, 0.51, 0.28]]) / 1.1

    # Execute
    out = confidence(TWO)

    # Assert
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_confidence_multiplies_confidence_by_client_weight() -> None:
    # Prepare: weights [2, 1] -> (1.0 A + 0.6 B) / 1.6 = [0.56, 0.66, 0.38] / 1.6
    expected = np.array([[0.35, 0.4125, 0.2375]])

    # Execute
    out = confidence(TWO, np.array([2.0, 1.0]))

    # Assert
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_median_is_coordinate_wise_then_renormalized() -> None:
    # Prepare: medians of [.5,.1,.2], [.3,.6,.2], [.2,.3,.6] = [.2, .3, .3] -> / 0.8
    preds = np.array([[A], [B], [[0.2, 0.2, 0.6]]])
    expected = np.array([[0.25, 0.375, 0.375]])

    # Execute
    out = median(preds)

    # Assert
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_median_of_disagreeing_one_hots_falls_back_to_uniform() -> None:
    # Prepare: every coordinate's median is 0
    preds = np.eye(3)[:, None, :]  # (K=3, N=1, C=3)

    # Execute
    out = median(preds)

    # Assert
    np.testing.assert_allclose(out, np.full((1, 3), 1 / 3), atol=1e-6)


def test_trimmed_mean_drops_floor_trim_k_values_per_side() -> None:
    # Prepare: K=5, trim 0.2 -> drop 1 per side; middle means [1/3, 0.3, 0.2] -> / (5/6)
    preds = np.array(
        [
            [[0.6, 0.2, 0.2]],
            [[0.5, 0.3, 0.2]],
            [[0.4, 0.4, 0.2]],
            [[0.1, 0.1, 0.8]],
            [[0.0, 1.0, 0.0]],
        ]
    )
    expected = np.array([[0.4, 0.36, 0.24]])

    # Execute
    out = trimmed_mean(preds, trim=0.2)

    # Assert
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_trimmed_mean_rounds_the_trim_count_down() -> None:
    # Prepare: K=3, trim 0.3 -> floor(0.9) = 0 values dropped: the plain mean
    preds = np.array([[A], [B], [[0.0, 0.0, 1.0]]])
    expected = np.array([[0.6, 0.9, 1.5]]) / 3

    # Execute
    out = trimmed_mean(preds, trim=0.3)

    # Assert
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_votes_counts_each_clients_argmax_without_normalizing() -> None:
    # Prepare: row 0 argmaxes 0, 1, 0; row 1 argmaxes 2, 2, 1
    preds = np.array(
        [
            [[0.6, 0.3, 0.1], [0.1, 0.2, 0.7]],
            [[0.2, 0.5, 0.3], [0.3, 0.3, 0.4]],
            [[0.4, 0.3, 0.3], [0.1, 0.8, 0.1]],
        ]
    )
    expected = np.array([[2, 1, 0], [0, 1, 2]], dtype=np.float32)

    # Execute
    out = votes(preds, np.array([5.0, 1.0, 1.0]))

    # Assert
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, expected)


def test_aggregate_dispatches_by_name_with_params() -> None:
    # Prepare
    expected = np.array([[36 / 142, 81 / 142, 25 / 142]])

    # Execute
    out = aggregate("dsfl", TWO, None, temperature=0.5)

    # Assert
    np.testing.assert_allclose(out, expected, atol=1e-6)


# -- properties ------------------------------------------------------------------------------
@pytest.mark.parametrize("rule", ["median", "trimmed_mean"])
def test_robust_rules_resist_one_adversarial_client_of_five(rule: str) -> None:
    # Prepare: four honest clients near [0.7, 0.2, 0.1]; one sends one-hot class 2
    honest = np.array([[0.7, 0.2, 0.1], [0.65, 0.25, 0.1], [0.72, 0.18, 0.1], [0.68, 0.2, 0.12]])
    preds = np.concatenate([honest, [[0.0, 0.0, 1.0]]])[:, None, :]
    target = honest.mean(axis=0)

    # Execute
    robust = aggregate(rule, preds)[0]
    naive = aggregate("mean_probs", preds)[0]

    # Assert
    assert np.abs(robust - target).sum() < 0.05
    assert np.abs(naive - target).sum() > 0.3


def test_dsfl_has_lower_entropy_than_the_mean() -> None:
    # Prepare
    rng = np.random.default_rng(0)
    preds = rng.dirichlet(np.ones(5), size=(4, 6))  # (K=4, N=6, C=5)

    # Execute
    sharp = dsfl(preds)
    mean = mean_probs(preds)

    # Assert
    assert np.all(_entropy(sharp) < _entropy(mean))


def test_mean_logits_equals_softmax_of_mean_logits() -> None:
    # Prepare
    rng = np.random.default_rng(1)
    logits = 2.0 * rng.standard_normal((4, 6, 5))
    weights = np.array([1.0, 2.0, 3.0, 4.0])

    # Execute
    plain = mean_logits(_softmax(logits))
    weighted_out = mean_logits(_softmax(logits), weights)

    # Assert
    np.testing.assert_allclose(plain, _softmax(logits.mean(axis=0)), atol=1e-6)
    expected_weighted = _softmax(np.tensordot(weights / weights.sum(), logits, axes=1))
    np.testing.assert_allclose(weighted_out, expected_weighted, atol=1e-6)


@pytest.mark.parametrize("rule", [r for r in AGGREGATORS if r != "votes"])
def test_rules_return_finite_probability_rows_for_one_hot_inputs(rule: str) -> None:
    # Prepare: K=3 clients, N=4 rows of one-hot predictions, some disagreeing
    classes = np.array([[0, 1, 2, 0], [0, 2, 2, 1], [0, 0, 1, 2]])
    preds = np.eye(3)[classes]  # (3, 4, 3)

    # Execute
    out = aggregate(rule, preds, np.array([1.0, 2.0, 3.0]))

    # Assert
    assert out.shape == (4, 3)
    assert out.dtype == np.float32
    assert np.all(np.isfinite(out))
    assert np.all(out >= 0)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-6)
    assert out[0].argmax() == 0  # a unanimous row keeps its class


def test_sharpening_survives_extreme_parameters() -> None:
    # Prepare
    preds = np.array([[[0.6, 0.3, 0.1]], [[0.5, 0.4, 0.1]]])

    # Execute
    cold = dsfl(preds, temperature=1e-300)
    hot = power(preds, beta=1e300)

    # Assert: both collapse to the argmax of the mean
    np.testing.assert_allclose(cold, [[1.0, 0.0, 0.0]], atol=1e-6)
    np.testing.assert_allclose(hot, [[1.0, 0.0, 0.0]], atol=1e-6)


def test_weights_scale_does_not_matter_even_near_overflow() -> None:
    # Prepare: weights 1e308 and 3e307 are the ratio 10 : 3 (their sum overflows float64)
    expected = (10 * np.array(A) + 3 * np.array(B)) / 13

    # Execute
    out = aggregate("weighted", TWO, np.array([1e308, 3e307]))
    conf = aggregate("confidence", TWO, np.array([1e308, 1e308]))

    # Assert
    np.testing.assert_allclose(out[0], expected, atol=1e-6)
    np.testing.assert_allclose(conf, confidence(TWO), atol=1e-6)


# -- errors ----------------------------------------------------------------------------------
def test_unknown_rule_lists_the_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown aggregation rule 'nope' \(choose from .*median"):
        aggregate("nope", TWO)


@pytest.mark.parametrize(
    ("rule", "params", "name"),
    [
        ("median", {"beta": 2.0}, "beta"),
        ("dsfl", {"temp": 0.5}, "temp"),
        ("dsfl", {"temperature": 1.0}, "temperature"),
        ("dsfl", {"temperature": 0.0}, "temperature"),
        ("dsfl", {"temperature": float("nan")}, "temperature"),
        ("dsfl", {"temperature": "cold"}, "temperature"),
        ("power", {"beta": 0.0}, "beta"),
        ("power", {"beta": float("inf")}, "beta"),
        ("trimmed_mean", {"trim": 0.5}, "trim"),
        ("trimmed_mean", {"trim": -0.1}, "trim"),
    ],
)
def test_bad_or_unexpected_params_name_the_parameter(
    rule: str, params: dict[str, object], name: str
) -> None:
    with pytest.raises(ValueError, match=name):
        aggregate(rule, TWO, **params)


@pytest.mark.parametrize("weights", [None, np.zeros(2)])
def test_weighted_requires_nonzero_weights(weights: np.ndarray | None) -> None:
    with pytest.raises(ValueError, match="weights"):
        aggregate("weighted", TWO, weights)


@pytest.mark.parametrize(
    ("preds", "weights", "match"),
    [
        (np.array([A, B]), None, "shape"),
        (np.zeros((0, 1, 3)), None, "shape"),
        (np.array([[[np.nan, 0.5, 0.5]]]), None, "finite"),
        (np.array([[[-0.1, 0.6, 0.5]]]), None, r"\[0, 1\]"),
        (np.array([[[1.5, 0.0, 0.0]]]), None, r"\[0, 1\]"),
        (TWO, np.array([1.0, 1.0, 1.0]), "shape"),
        (TWO, np.array([1.0, -1.0]), "non-negative"),
        (TWO, np.array([1.0, np.inf]), "finite"),
    ],
)
def test_malformed_inputs_are_value_errors(
    preds: np.ndarray, weights: np.ndarray | None, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        aggregate("mean_probs", preds, weights)
