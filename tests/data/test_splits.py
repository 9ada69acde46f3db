"""Tests for fedkd.data.splits: disjoint, stratified, deterministic private/proxy/test."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gzip  # noqa: E402
import math  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from fedkd.data.sources import DataError, load_source  # noqa: E402
from fedkd.data.splits import Splits, build_splits  # noqa: E402

uncached_build_splits = build_splits.__wrapped__


def row_counts(x: np.ndarray) -> Counter:
    """Multiset of the rows of ``x`` (as bytes), to compare splits without indices."""
    return Counter(row.tobytes() for row in np.ascontiguousarray(x).reshape(len(x), -1))


def write_npz(path: Path, rng: np.random.Generator, *, shape: tuple[int, ...]) -> Path:
    """A small npz source: 30 train and 10 test examples of ``shape``, 3 classes."""
    np.savez(
        path,
        x_train=rng.random((30, *shape), dtype=np.float32),
        y_train=np.arange(30) % 3,
        x_test=rng.random((10, *shape), dtype=np.float32),
        y_test=np.arange(10) % 3,
    )
    return path


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as a gzipped IDX file at ``path`` + ``.gz``."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">i4").tobytes()
    path.with_name(path.name + ".gz").write_bytes(gzip.compress(header + array.tobytes()))


def test_digits_splits_are_disjoint_and_use_every_example():
    # Prepare
    source = load_source("digits")

    # Execute
    splits = build_splits("digits", seed=0)

    # Assert
    assert isinstance(splits, Splits)
    sizes = (len(splits.y_private), len(splits.y_proxy), len(splits.y_test))
    assert sum(sizes) == len(source.y_train)
    assert sizes == (1149, 288, 360)
    combined = row_counts(splits.x_private) + row_counts(splits.x_proxy)
    assert combined + row_counts(splits.x_test) == row_counts(source.x_train)
    assert splits.num_classes == 10 and splits.input_shape == (8, 8)
    assert splits.x_private.shape[1:] == (8, 8) and splits.x_private.dtype == np.float32


def test_digits_splits_are_stratified_by_class():
    # Prepare
    all_counts = np.bincount(load_source("digits").y_train, minlength=10)

    # Execute
    splits = build_splits("digits", seed=0)

    # Assert
    test_counts = np.bincount(splits.y_test, minlength=10)
    pool_counts = all_counts - test_counts
    proxy_counts = np.bincount(splits.y_proxy, minlength=10)
    assert np.all(np.abs(test_counts - 0.2 * all_counts) <= 1)
    assert np.all(np.abs(proxy_counts - 0.2 * pool_counts) <= 1)
    np.testing.assert_array_equal(
        np.bincount(splits.y_private, minlength=10), pool_counts - proxy_counts
    )


def test_build_splits_is_deterministic_in_seed_and_cached():
    # Prepare
    kwargs = {"test_fraction": 0.25, "proxy_fraction": 0.3}

    # Execute
    first = uncached_build_splits("digits", seed=7, **kwargs)
    again = uncached_build_splits("digits", seed=7, **kwargs)
    other = uncached_build_splits("digits", seed=8, **kwargs)

    # Assert
    for name in ("x_private", "y_private", "x_proxy", "y_proxy", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
    assert not np.array_equal(first.y_private, other.y_private)
    assert build_splits("digits", seed=7, **kwargs) is build_splits("digits", seed=7, **kwargs)


def test_source_with_its_own_test_split_keeps_it_and_holds_proxy_out_of_train(tmp_path):
    # Prepare
    path = write_npz(tmp_path / "own-test.npz", np.random.default_rng(1), shape=(2, 3))
    source = load_source(f"npz:{path}")

    # Execute
    splits = build_splits(f"npz:{path}", seed=0, proxy_fraction=0.2)

    # Assert
    np.testing.assert_array_equal(splits.x_test, source.x_test)
    np.testing.assert_array_equal(splits.y_test, source.y_test)
    assert (len(splits.y_private), len(splits.y_proxy)) == (24, 6)
    combined = row_counts(splits.x_private) + row_counts(splits.x_proxy)
    assert combined == row_counts(source.x_train)
    assert np.bincount(splits.y_proxy).tolist() == [2, 2, 2]


def test_idx_source_round_trips_through_build_splits(tmp_path):
    # Prepare
    rng = np.random.default_rng(2)
    x_train = rng.integers(0, 256, size=(40, 3, 3), dtype=np.uint8)
    x_test = rng.integers(0, 256, size=(8, 3, 3), dtype=np.uint8)
    write_idx(tmp_path / "train-images-idx3-ubyte", x_train)
    write_idx(tmp_path / "train-labels-idx1-ubyte", (np.arange(40) % 4).astype(np.uint8))
    write_idx(tmp_path / "t10k-images-idx3-ubyte", x_test)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", (np.arange(8) % 4).astype(np.uint8))

    # Execute
    splits = build_splits(f"idx:{tmp_path}", seed=0, proxy_fraction=0.25)

    # Assert
    np.testing.assert_allclose(splits.x_test, x_test / 255.0, rtol=1e-6)
    assert (len(splits.y_private), len(splits.y_proxy)) == (30, 10)
    combined = row_counts(splits.x_private) + row_counts(splits.x_proxy)
    assert combined == row_counts((x_train / 255.0).astype(np.float32))
    assert splits.num_classes == 4 and splits.input_shape == (3, 3)


def test_proxy_source_supplies_the_proxy_and_private_keeps_all_remaining_train(tmp_path):
    # Prepare
    path = write_npz(tmp_path / "proxy.npz", np.random.default_rng(3), shape=(8, 8))
    proxy = load_source(f"npz:{path}")

    # Execute
    splits = build_splits("digits", seed=0, proxy_source=f"npz:{path}")

    # Assert
    np.testing.assert_array_equal(splits.x_proxy, proxy.x_train)
    np.testing.assert_array_equal(splits.y_proxy, proxy.y_train)
    assert (len(splits.y_private), len(splits.y_test)) == (1437, 360)
    assert splits.num_classes == 10


def test_proxy_source_with_other_example_shape_is_rejected(tmp_path):
    # Prepare
    path = write_npz(tmp_path / "proxy-shape.npz", np.random.default_rng(4), shape=(4, 4))

    # Execute
    with pytest.raises(DataError) as excinfo:
        build_splits("digits", seed=0, proxy_source=f"npz:{path}")

    # Assert
    assert "has example shape (4, 4), source 'digits' has (8, 8)" in str(excinfo.value)
    assert str(path) in str(excinfo.value)


def test_proxy_source_equal_to_source_is_rejected():
    # Prepare / Execute
    with pytest.raises(DataError) as excinfo:
        build_splits("digits", seed=0, proxy_source="digits")

    # Assert
    assert "data.proxy_source 'digits' is the private source" in str(excinfo.value)


def test_proxy_size_caps_the_proxy_with_a_subset_and_leaves_private_unchanged():
    # Prepare
    full = build_splits("digits", seed=0)

    # Execute
    capped = build_splits("digits", seed=0, proxy_size=50)

    # Assert
    assert len(capped.y_proxy) == len(capped.x_proxy) == 50
    assert not row_counts(capped.x_proxy) - row_counts(full.x_proxy)
    np.testing.assert_array_equal(capped.x_private, full.x_private)
    np.testing.assert_array_equal(capped.x_test, full.x_test)


def test_proxy_size_larger_than_the_proxy_keeps_it_whole():
    # Prepare
    full = build_splits("digits", seed=0)

    # Execute
    capped = build_splits("digits", seed=0, proxy_size=10_000)

    # Assert
    np.testing.assert_array_equal(capped.x_proxy, full.x_proxy)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"test_fraction": 1.5}, "data.test_fraction must be in (0, 1), got 1.5"),
        ({"test_fraction": 0.0}, "data.test_fraction must be in (0, 1), got 0.0"),
        ({"proxy_fraction": 1.0}, "data.proxy_fraction must be in (0, 1), got 1.0"),
        ({"proxy_fraction": -0.1}, "data.proxy_fraction must be in (0, 1), got -0.1"),
        ({"proxy_size": 0}, "data.proxy_size must be a positive integer, got 0"),
    ],
)
def test_out_of_range_settings_raise_value_error_naming_the_key(kwargs, message):
    # Prepare / Execute
    with pytest.raises(ValueError) as excinfo:
        build_splits("digits", seed=0, **kwargs)

    # Assert
    assert str(excinfo.value) == message


def test_missing_npz_file_is_reported_with_its_path(tmp_path):
    # Prepare
    path = tmp_path / "nowhere.npz"

    # Execute
    with pytest.raises(DataError) as excinfo:
        build_splits(f"npz:{path}", seed=0)

    # Assert
    assert str(excinfo.value) == f"{path}: npz file not found"


def test_npz_missing_array_is_named_in_the_error(tmp_path):
    # Prepare
    path = tmp_path / "partial.npz"
    np.savez(path, x_train=np.zeros((4, 2)), y_train=np.zeros(4, dtype=np.int64))

    # Execute
    with pytest.raises(DataError) as excinfo:
        build_splits(f"npz:{path}", seed=0)

    # Assert
    assert str(excinfo.value) == f"{path}: missing array(s) x_test, y_test"


def test_class_too_rare_to_stratify_is_reported_as_data_error(tmp_path):
    # Prepare
    path = tmp_path / "rare.npz"
    y_train = np.array([0] * 9 + [1])
    np.savez(
        path, x_train=np.zeros((10, 2)), y_train=y_train, x_test=np.zeros((2, 2)), y_test=[0, 1]
    )

    # Execute
    with pytest.raises(DataError) as excinfo:
        build_splits(f"npz:{path}", seed=0)

    # Assert
    assert f"cannot make a stratified split of 'npz:{path}'" in str(excinfo.value)


def test_validation_split_is_disjoint_from_private_proxy_and_test_and_stratified():
    # Prepare
    plain = uncached_build_splits("digits", seed=0)

    # Execute
    splits = uncached_build_splits("digits", seed=0, validation_fraction=0.15)

    # Assert: carved out of the private pool only; proxy and test are untouched
    np.testing.assert_array_equal(splits.x_proxy, plain.x_proxy)
    np.testing.assert_array_equal(splits.x_test, plain.x_test)
    assert row_counts(splits.x_private) + row_counts(splits.x_val) == row_counts(plain.x_private)
    val_rows = row_counts(splits.x_val)
    for other in (splits.x_private, splits.x_proxy, splits.x_test):
        assert not set(val_rows) & set(row_counts(other))
    pool_counts = np.bincount(plain.y_private, minlength=10)
    val_counts = np.bincount(splits.y_val, minlength=10)
    assert len(splits.y_val) == math.ceil(0.15 * len(plain.y_private))  # as scikit-learn
    assert np.all(np.abs(val_counts - 0.15 * pool_counts) <= 1)
    assert splits.x_val.shape[1:] == (8, 8) and splits.x_val.dtype == np.float32


def test_validation_split_has_its_own_seed_stream():
    # Execute
    a = uncached_build_splits("digits", seed=0, validation_fraction=0.15)
    b = uncached_build_splits("digits", seed=0, validation_fraction=0.15)
    c = uncached_build_splits("digits", seed=1, validation_fraction=0.15)

    # Assert
    np.testing.assert_array_equal(a.x_val, b.x_val)
    assert row_counts(a.x_val) != row_counts(c.x_val)


def test_validation_fraction_zero_changes_nothing():
    # Execute
    plain = uncached_build_splits("digits", seed=0, proxy_size=100)
    zero = uncached_build_splits("digits", seed=0, proxy_size=100, validation_fraction=0.0)

    # Assert
    for name in ("x_private", "y_private", "x_proxy", "y_proxy", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(zero, name), getattr(plain, name))
    assert zero.x_val.shape == (0, 8, 8) and zero.y_val.shape == (0,)


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_validation_fraction_out_of_range_names_the_key(fraction):
    with pytest.raises(ValueError, match=r"data\.validation_fraction must be in \[0, 1\)"):
        uncached_build_splits("digits", seed=0, validation_fraction=fraction)
