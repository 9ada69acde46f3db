"""Tests for fedkd.data.sources: digits, IDX and npz sources and their errors."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gzip  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from fedkd.data.sources import DataError, Source, load_source, read_idx  # noqa: E402

IDX_STEMS = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


def write_idx(path: Path, array: np.ndarray, *, gz: bool = False) -> Path:
    """Write a uint8 array as an IDX file (gzipped when ``gz``); return its path."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">i4").tobytes()
    payload = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


def write_idx_dir(directory: Path, arrays: dict[str, np.ndarray], *, gz: bool) -> Path:
    """Write the four MNIST-format IDX files into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    for key, stem in IDX_STEMS.items():
        write_idx(directory / stem, arrays[key], gz=gz)
    return directory


def tiny_idx_arrays(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Small uint8 images (5x4) and labels 0..3 for an IDX round trip."""
    return {
        "x_train": rng.integers(0, 256, size=(12, 5, 4), dtype=np.uint8),
        "y_train": rng.permutation(np.arange(12) % 4).astype(np.uint8),
        "x_test": rng.integers(0, 256, size=(6, 5, 4), dtype=np.uint8),
        "y_test": (np.arange(6) % 3).astype(np.uint8),
    }


def test_digits_source_is_8x8_float32_in_unit_range_without_test_split():
    # Prepare / Execute
    source = load_source("digits")

    # Assert
    assert isinstance(source, Source)
    assert source.x_train.shape == (1797, 8, 8)
    assert source.x_train.dtype == np.float32
    assert source.x_train.min() == 0.0 and source.x_train.max() == 1.0
    assert source.y_train.dtype == np.int64
    assert set(np.unique(source.y_train)) == set(range(10))
    assert source.num_classes == 10 and source.input_shape == (8, 8)
    assert source.x_test is None and source.y_test is None
    assert source.name == "digits"


def test_load_source_returns_the_cached_object_on_repeated_calls():
    # Prepare
    first = load_source("digits")

    # Execute
    second = load_source("digits")

    # Assert
    assert second is first


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzipped"])
def test_idx_source_round_trips_tiny_files(tmp_path, gz):
    # Prepare
    arrays = tiny_idx_arrays(np.random.default_rng(3))
    directory = write_idx_dir(tmp_path / "idx", arrays, gz=gz)

    # Execute
    source = load_source(f"idx:{directory}")

    # Assert
    assert source.input_shape == (5, 4)
    assert source.x_train.dtype == np.float32 and source.x_test is not None
    np.testing.assert_allclose(source.x_train, arrays["x_train"] / 255.0, rtol=1e-6)
    np.testing.assert_allclose(source.x_test, arrays["x_test"] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(source.y_train, arrays["y_train"])
    np.testing.assert_array_equal(source.y_test, arrays["y_test"])
    assert source.y_train.dtype == np.int64
    assert source.num_classes == 4


def test_read_idx_reads_header_dimensions_and_values(tmp_path):
    # Prepare
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = write_idx(tmp_path / "a-idx3-ubyte", array)

    # Execute
    loaded = read_idx(path)

    # Assert
    np.testing.assert_array_equal(loaded, array)
    assert loaded.dtype == np.uint8


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (b"\x01\x00\x08\x01\x00\x00\x00\x01\x05", "bad magic number"),
        (b"\x00\x00\x07\x01\x00\x00\x00\x01\x05", "unknown IDX data type code 0x07"),
        (b"\x00\x00\x08\x02\x00\x00\x00\x01", "truncated IDX header"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x03\x05", "IDX payload has 1 bytes"),
    ],
    ids=["magic", "dtype", "header", "payload"],
)
def test_read_idx_rejects_malformed_files_naming_them(tmp_path, payload, problem):
    # Prepare
    path = tmp_path / "broken-idx1-ubyte"
    path.write_bytes(payload)

    # Execute
    with pytest.raises(DataError) as excinfo:
        read_idx(path)

    # Assert
    assert str(path) in str(excinfo.value)
    assert problem in str(excinfo.value)


def test_idx_source_names_the_missing_file(tmp_path):
    # Prepare
    directory = write_idx_dir(tmp_path / "idx", tiny_idx_arrays(np.random.default_rng(0)), gz=False)
    (directory / IDX_STEMS["y_test"]).unlink()

    # Execute
    with pytest.raises(DataError) as excinfo:
        load_source(f"idx:{directory}")

    # Assert
    assert IDX_STEMS["y_test"] in str(excinfo.value)
    assert "not found" in str(excinfo.value)


def test_idx_source_rejects_label_count_mismatch(tmp_path):
    # Prepare
    arrays = tiny_idx_arrays(np.random.default_rng(0))
    arrays["y_train"] = arrays["y_train"][:-1]
    directory = write_idx_dir(tmp_path / "idx", arrays, gz=False)

    # Execute
    with pytest.raises(DataError) as excinfo:
        load_source(f"idx:{directory}")

    # Assert
    assert "12 feature rows but 11 labels" in str(excinfo.value)


def test_npz_source_scales_integers_on_one_scale_and_counts_classes_over_both_splits(tmp_path):
    # Prepare
    path = tmp_path / "ints.npz"
    np.savez(
        path,
        x_train=np.array([[0, 50], [100, 200]], dtype=np.int64),
        y_train=np.array([0, 1]),
        x_test=np.array([[10, 20]], dtype=np.int64),
        y_test=np.array([4]),
    )

    # Execute
    source = load_source(f"npz:{path}")

    # Assert
    np.testing.assert_allclose(source.x_train, [[0.0, 0.25], [0.5, 1.0]])
    np.testing.assert_allclose(source.x_test, [[0.05, 0.1]])
    assert source.num_classes == 5
    assert source.input_shape == (2,)


def test_npz_source_keeps_float_features_and_accepts_integral_float_labels(tmp_path):
    # Prepare
    path = tmp_path / "floats.npz"
    x_train = np.array([[[-1.5, 2.0]], [[0.25, 3.0]]], dtype=np.float64)
    np.savez(
        path,
        x_train=x_train,
        y_train=np.array([1.0, 0.0]),
        x_test=x_train[:1],
        y_test=np.array([2], dtype=np.uint8),
    )

    # Execute
    source = load_source(f"npz:{path}")

    # Assert
    assert source.x_train.dtype == np.float32
    np.testing.assert_array_equal(source.x_train, x_train.astype(np.float32))
    np.testing.assert_array_equal(source.y_train, [1, 0])
    assert source.y_train.dtype == np.int64 and source.y_test.dtype == np.int64
    assert source.input_shape == (1, 2) and source.num_classes == 3


def _valid_npz_arrays() -> dict[str, np.ndarray]:
    """Four consistent arrays: 4 train and 2 test examples of 3 features, 2 classes."""
    return {
        "x_train": np.zeros((4, 3), dtype=np.float32),
        "y_train": np.array([0, 1, 0, 1]),
        "x_test": np.zeros((2, 3), dtype=np.float32),
        "y_test": np.array([1, 0]),
    }


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"y_test": None}, "missing array(s) y_test"),
        ({"x_train": None, "y_test": None}, "missing array(s) x_train, y_test"),
        ({"y_train": np.array([0, 1, 0])}, "4 feature rows but 3 labels"),
        ({"y_train": np.array([0, -1, 0, 1])}, "labels must be non-negative"),
        ({"y_test": np.array([0.5, 1.0])}, "labels must be integers"),
        ({"y_test": np.array(["a", "b"])}, "labels must be integers"),
        ({"y_train": np.zeros((4, 2), dtype=np.int64)}, "labels must be 1-D"),
    ],
    ids=["missing-one", "missing-two", "length", "negative", "fractional", "strings", "2d"],
)
def test_npz_source_rejects_bad_archives_naming_file_and_problem(tmp_path, change, problem):
    # Prepare
    arrays = _valid_npz_arrays()
    arrays.update(change)
    path = tmp_path / "bad.npz"
    np.savez(path, **{name: value for name, value in arrays.items() if value is not None})

    # Execute
    with pytest.raises(DataError) as excinfo:
        load_source(f"npz:{path}")

    # Assert
    assert str(path) in str(excinfo.value)
    assert problem in str(excinfo.value)


def test_npz_source_reports_a_missing_file(tmp_path):
    # Prepare
    path = tmp_path / "absent.npz"

    # Execute
    with pytest.raises(DataError) as excinfo:
        load_source(f"npz:{path}")

    # Assert
    assert str(excinfo.value) == f"{path}: npz file not found"


def test_npz_source_rejects_a_file_that_is_not_an_archive(tmp_path):
    # Prepare
    path = tmp_path / "garbage.npz"
    path.write_bytes(b"not a zip file at all")

    # Execute
    with pytest.raises(DataError) as excinfo:
        load_source(f"npz:{path}")

    # Assert
    assert str(path) in str(excinfo.value)
    assert "cannot read npz file" in str(excinfo.value)


@pytest.mark.parametrize("spec", ["mnist", "idx:", "npz:", "digits:extra", ""])
def test_unknown_spec_raises_data_error_listing_valid_specs(spec):
    # Prepare / Execute
    with pytest.raises(DataError) as excinfo:
        load_source(spec)

    # Assert
    assert str(excinfo.value) == (
        f"unknown data source '{spec}' (use digits, idx:DIR, npz:PATH, hub:NAME or "
        "py:package.module:callable)"
    )


def test_hub_source_raises_data_error_when_offline():
    # Prepare
    assert os.environ["HF_HUB_OFFLINE"] == "1"

    # Execute
    with pytest.raises(DataError) as excinfo:
        load_source("hub:fedkd-tests/no-such-dataset")

    # Assert
    assert "cannot load hub data set 'fedkd-tests/no-such-dataset'" in str(excinfo.value)


class _FakeFederatedDataset:
    """Stands in for flwr_datasets.FederatedDataset with an in-memory train split only."""

    train = None

    def __init__(self, **kwargs):
        self.kwargs = kwargs

    def load_split(self, split):
        if split != "train":
            raise ValueError(f"The given split: '{split}' is not present")
        return self.train


def test_hub_source_converts_channels_last_images_and_guesses_columns(monkeypatch):
    # Prepare
    import datasets
    import flwr_datasets

    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, size=(6, 4, 5, 3), dtype=np.uint8)
    labels = np.array([0, 1, 2, 0, 1, 2])
    fake = type("Fake", (_FakeFederatedDataset,), {})
    fake.train = datasets.Dataset.from_dict({"img": images, "label": labels, "id": np.arange(6)})
    monkeypatch.setattr(flwr_datasets, "FederatedDataset", fake)

    # Execute
    source = load_source("hub:fedkd-tests/fake-rgb")

    # Assert
    assert source.input_shape == (3, 4, 5)
    np.testing.assert_allclose(source.x_train, np.moveaxis(images, -1, 1) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(source.y_train, labels)
    assert source.x_test is None and source.num_classes == 3


def test_hub_source_reports_a_named_column_that_does_not_exist(monkeypatch):
    # Prepare
    import datasets
    import flwr_datasets

    fake = type("Fake", (_FakeFederatedDataset,), {})
    fake.train = datasets.Dataset.from_dict({"pixels": np.zeros((2, 2, 2)), "label": [0, 1]})
    monkeypatch.setattr(flwr_datasets, "FederatedDataset", fake)

    # Execute
    with pytest.raises(DataError) as excinfo:
        load_source("hub:fedkd-tests/fake-gray:picture")

    # Assert
    assert "no image column 'picture'" in str(excinfo.value)


def _npz(tmp_path: Path, name: str, **arrays: np.ndarray) -> str:
    """Write ``arrays`` to ``tmp_path/name`` and return its spec."""
    path = tmp_path / name
    np.savez(path, **arrays)
    return f"npz:{path}"


def test_float_images_in_0_255_are_refused_naming_the_scale(tmp_path):
    x = np.random.default_rng(0).uniform(0, 255, (6, 4, 4)).astype(np.float32)
    spec = _npz(
        tmp_path, "f255.npz", x_train=x, y_train=np.arange(6) % 2, x_test=x, y_test=[0, 1] * 3
    )
    with pytest.raises(DataError) as err:
        load_source(spec)
    message = str(err.value)
    assert (
        "f255.npz" in message and "expects float features in [0, 1]: divide them by 255" in message
    )
    assert len(message.splitlines()) == 1


def test_non_finite_features_are_refused(tmp_path):
    x = np.zeros((2, 3), np.float32)
    x[1, 2] = np.nan
    spec = _npz(tmp_path, "nan.npz", x_train=x, y_train=[0, 1], x_test=x, y_test=[0, 1])
    with pytest.raises(DataError, match="nan.npz: x: features contain NaN or infinite values"):
        load_source(spec)


def test_standardised_float_features_with_negatives_are_kept(tmp_path):
    x = np.array([[-1.5, 2.5], [0.5, -0.25]], np.float32)
    source = load_source(
        _npz(tmp_path, "z.npz", x_train=x, y_train=[0, 1], x_test=x, y_test=[1, 0])
    )
    np.testing.assert_array_equal(source.x_train, x)


def test_channels_last_images_are_moved_to_channels_first(tmp_path, caplog):
    x = np.random.default_rng(1).integers(0, 256, (4, 6, 5, 1)).astype(np.uint8)
    spec = _npz(tmp_path, "hwc.npz", x_train=x, y_train=[0, 1, 0, 1], x_test=x[:2], y_test=[1, 0])
    with caplog.at_level("INFO", logger="fedkd.data"):
        source = load_source(spec)
    assert source.input_shape == (1, 6, 5)
    assert source.x_test.shape == (2, 1, 6, 5)
    np.testing.assert_allclose(source.x_train[:, 0], x[..., 0] / 255.0, rtol=1e-6)
    assert "channels-last" in caplog.text


@pytest.mark.parametrize(
    ("y_train", "y_test", "needle"),
    [
        ([1, 2, 3, 4], [4, 1], "labels run 1..4, fedkd expects 0..C-1: subtract 1"),
        (
            [2, 5, 7, 2],
            [5, 7],
            "the smallest label is 2, fedkd expects 0..C-1: remap the labels to 0..2",
        ),
    ],
)
def test_labels_that_do_not_start_at_zero_are_refused_naming_the_fix(
    tmp_path, y_train, y_test, needle
):
    x = np.zeros((4, 3), np.uint8)
    spec = _npz(tmp_path, "one.npz", x_train=x, y_train=y_train, x_test=x[:2], y_test=y_test)
    with pytest.raises(DataError) as err:
        load_source(spec)
    assert needle in str(err.value) and len(str(err.value).splitlines()) == 1
