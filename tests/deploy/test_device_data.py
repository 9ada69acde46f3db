"""A device's own data from node config: IDX directory or npz, proxy rows as the server's."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from fedkd.clientdata import client_data, splits_for
from fedkd.config import from_dict
from fedkd.data import DataError
from fedkd.data.device import device_data, read_device_data

CFG = from_dict({"clients": {"num_clients": 3}})


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, dtype=">i4").tobytes()
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def test_npz_device_data_matches_the_partition(tmp_path: Path) -> None:
    ref = client_data(CFG.data, CFG.seed, 3, 1)
    path = tmp_path / "p1.npz"
    np.savez(path, x_train=ref.x_private, y_train=ref.y_private)
    data = device_data(CFG, {"data-path": str(path)})
    np.testing.assert_array_equal(data.x_private, ref.x_private)
    np.testing.assert_array_equal(data.y_private, ref.y_private)
    np.testing.assert_array_equal(data.x_proxy, splits_for(CFG.data, CFG.seed).x_proxy)
    assert data.num_classes == 10 and data.input_shape == (8, 8)


def test_idx_directory_is_scaled_like_the_sources(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(20, 8, 8))
    y = rng.integers(0, 10, size=20)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", x)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", y)
    data = device_data(CFG, {"data-path": str(tmp_path)})
    np.testing.assert_allclose(data.x_private, x / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(data.y_private, y)


def test_proxy_source_stands_for_the_run_source(tmp_path: Path) -> None:
    ref = client_data(CFG.data, CFG.seed, 3, 0)
    np.savez(tmp_path / "p0.npz", x_train=ref.x_private, y_train=ref.y_private)
    data = device_data(CFG, {"data-path": str(tmp_path / "p0.npz"), "proxy-source": "digits"})
    np.testing.assert_array_equal(data.x_proxy, ref.x_proxy)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.npz", "data-path not found"),
        (lambda d: d, "IDX file not found"),
        (lambda d: (d / "x.csv").write_text("1,2") and d / "x.csv", "IDX directory or an .npz"),
        (lambda d: (d / "bad.npz").write_bytes(b"nonsense") and d / "bad.npz", "cannot read npz"),
    ],
)
def test_missing_or_malformed_path_names_path_and_problem(tmp_path: Path, make, message) -> None:
    path = make(tmp_path)
    with pytest.raises(DataError, match=message) as err:
        device_data(CFG, {"data-path": str(path)})
    assert str(path) in str(err.value)


def test_data_that_does_not_fit_the_run_is_refused(tmp_path: Path) -> None:
    np.savez(tmp_path / "shape.npz", x_train=np.zeros((4, 28, 28), np.float32), y_train=[0] * 4)
    with pytest.raises(DataError, match=r"shape \(28, 28\)"):
        device_data(CFG, {"data-path": str(tmp_path / "shape.npz")})
    np.savez(tmp_path / "labels.npz", x_train=np.zeros((2, 8, 8), np.float32), y_train=[0, 12])
    with pytest.raises(DataError, match="label 12 outside the run's 10 classes"):
        device_data(CFG, {"data-path": str(tmp_path / "labels.npz")})
    np.savez(tmp_path / "nox.npz", y_train=[0])
    with pytest.raises(DataError, match="missing array"):
        read_device_data(str(tmp_path / "nox.npz"))
    with pytest.raises(DataError, match="no data-path"):
        device_data(CFG, {"partition-id": 0})
