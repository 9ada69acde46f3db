"""Tests for fedkd.data.partition: coverage, disjointness, determinism, skew, errors."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from fedkd.data.partition import SCHEMES, partition  # noqa: E402

NUM_CLASSES = 10


@pytest.fixture
def labels() -> np.ndarray:
    """600 shuffled labels, 60 of each of 10 classes."""
    return np.random.default_rng(0).permutation(np.repeat(np.arange(NUM_CLASSES), 60))


def assert_disjoint_sorted_int64(parts: list[np.ndarray], num_examples: int) -> np.ndarray:
    """Assert the index arrays are sorted, int64, in range and disjoint; return their union."""
    for part in parts:
        assert part.dtype == np.int64
        assert np.all(np.diff(part) > 0)
        assert part.size == 0 or (part[0] >= 0 and part[-1] < num_examples)
    union = np.concatenate(parts)
    assert len(np.unique(union)) == len(union)
    return union


def classes_per_part(labels: np.ndarray, parts: list[np.ndarray]) -> list[int]:
    """Number of distinct labels in each partition."""
    return [len(np.unique(labels[part])) for part in parts]


@pytest.mark.parametrize("scheme", ["iid", "dirichlet", "shards"])
@pytest.mark.parametrize("num_partitions", [1, 7, 10])
def test_partitions_are_disjoint_and_cover_every_index(labels, scheme, num_partitions):
    # Prepare / Execute
    parts = partition(labels, num_partitions, scheme, seed=11)

    # Assert
    assert len(parts) == num_partitions
    union = assert_disjoint_sorted_int64(parts, len(labels))
    np.testing.assert_array_equal(np.sort(union), np.arange(len(labels)))


def test_shards_deal_examples_that_fill_no_whole_shard_to_partitions():
    # Prepare
    labels = np.repeat(np.arange(4), 26)  # 104 examples, 21 shards of 4 leave 20 over

    # Execute
    parts = partition(labels, 7, "shards", seed=2, shards_per_partition=3)

    # Assert
    union = assert_disjoint_sorted_int64(parts, len(labels))
    np.testing.assert_array_equal(np.sort(union), np.arange(len(labels)))
    sizes = [len(part) for part in parts]
    assert max(sizes) - min(sizes) <= 3


def test_shards_hold_label_sorted_runs(labels):
    # Prepare: 10 partitions x 2 shards of 30 examples align with the 60-example classes

    # Execute
    parts = partition(labels, 10, "shards", seed=4, shards_per_partition=2)

    # Assert
    assert max(classes_per_part(labels, parts)) <= 2


def test_iid_partitions_have_balanced_sizes_and_mixed_labels(labels):
    # Prepare / Execute
    parts = partition(labels, 7, "iid", seed=1)

    # Assert
    sizes = [len(part) for part in parts]
    assert max(sizes) - min(sizes) <= 1
    assert min(classes_per_part(labels, parts)) >= 8


def test_pathological_partitions_hold_at_most_k_classes_and_cover_when_enough_partitions(labels):
    # Prepare / Execute
    parts = partition(labels, 12, "pathological", seed=5, classes_per_partition=3)

    # Assert
    union = assert_disjoint_sorted_int64(parts, len(labels))
    np.testing.assert_array_equal(np.sort(union), np.arange(len(labels)))
    assert max(classes_per_part(labels, parts)) <= 3


def test_pathological_with_fewer_partitions_than_classes_warns_and_stays_disjoint(labels):
    # Prepare / Execute
    with pytest.warns(UserWarning, match="will NOT be used"):
        parts = partition(labels, 3, "pathological", seed=5, classes_per_partition=2)

    # Assert
    union = assert_disjoint_sorted_int64(parts, len(labels))
    assert len(union) < len(labels)
    assert classes_per_part(labels, parts) == [2, 2, 2]


@pytest.mark.parametrize("scheme", SCHEMES)
def test_same_seed_gives_identical_partitions_and_other_seed_differs(labels, scheme):
    # Prepare
    kwargs = {"classes_per_partition": 3}

    # Execute
    first = partition(labels, 10, scheme, seed=21, **kwargs)
    again = partition(labels, 10, scheme, seed=21, **kwargs)
    other = partition(labels, 10, scheme, seed=22, **kwargs)

    # Assert
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_dirichlet_with_small_alpha_skews_labels_more_than_iid(labels):
    # Prepare
    iid = partition(labels, 10, "iid", seed=3)

    # Execute
    skewed = partition(labels, 10, "dirichlet", seed=3, alpha=0.1)

    # Assert
    assert np.mean(classes_per_part(labels, skewed)) < np.mean(classes_per_part(labels, iid)) - 3


def test_dirichlet_respects_min_size(labels):
    # Prepare / Execute
    parts = partition(labels, 5, "dirichlet", seed=8, alpha=1.0, min_size=20)

    # Assert
    assert min(len(part) for part in parts) >= 20


@pytest.mark.parametrize(
    ("args", "kwargs", "parameter"),
    [
        ((0, "iid"), {}, "num_partitions must be >= 1"),
        ((601, "iid"), {}, "num_partitions (601) exceeds the number of examples (600)"),
        ((5, "dirichlet"), {"alpha": 0.0}, "alpha must be > 0"),
        ((5, "dirichlet"), {"alpha": -1.0}, "alpha must be > 0"),
        ((5, "dirichlet"), {"min_size": 200}, "min_size (200) times num_partitions"),
        ((5, "pathological"), {"classes_per_partition": 0}, "classes_per_partition"),
        ((5, "pathological"), {"classes_per_partition": 11}, "classes_per_partition"),
        ((5, "shards"), {"shards_per_partition": 0}, "shards_per_partition"),
        ((5, "shards"), {"shards_per_partition": 121}, "shards_per_partition (121)"),
        ((5, "random"), {}, "scheme must be one of iid, dirichlet, pathological, shards"),
    ],
    ids=[
        "zero-partitions",
        "too-many-partitions",
        "alpha-zero",
        "alpha-negative",
        "min-size",
        "classes-zero",
        "classes-too-many",
        "shards-zero",
        "shards-too-many",
        "unknown-scheme",
    ],
)
def test_invalid_arguments_raise_value_error_naming_the_parameter(labels, args, kwargs, parameter):
    # Prepare / Execute
    with pytest.raises(ValueError) as excinfo:
        partition(labels, *args, seed=0, **kwargs)

    # Assert
    assert parameter in str(excinfo.value)


@pytest.mark.parametrize("bad", [np.array([0.5, 1.0]), np.zeros((2, 2), dtype=np.int64)])
def test_non_integer_or_multidimensional_labels_are_rejected(bad):
    # Prepare / Execute
    with pytest.raises(ValueError) as excinfo:
        partition(bad, 1, "iid", seed=0)

    # Assert
    assert "labels must be a 1-D integer array" in str(excinfo.value)


def test_negative_seed_is_rejected(labels):
    # Prepare / Execute
    with pytest.raises(ValueError) as excinfo:
        partition(labels, 2, "iid", seed=-1)

    # Assert
    assert "seed must be a non-negative integer" in str(excinfo.value)
