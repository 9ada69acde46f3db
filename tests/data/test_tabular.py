"""The flat-feature loaders of ``fedkd.data.tabular``: shapes, fixed test split, scaling."""

from __future__ import annotations

import numpy as np
import pytest

from fedkd.data import load_source, tabular


@pytest.mark.parametrize(
    ("loader", "train", "test", "features", "classes"),
    [("breast_cancer", 455, 114, 30, 2), ("synthetic", 1600, 400, 20, 4)],
)
def test_loader_gives_a_standardised_flat_source(loader, train, test, features, classes):
    source = load_source(f"py:fedkd.data.tabular:{loader}")
    assert source.x_train.shape == (train, features)
    assert source.x_test.shape == (test, features)
    assert source.input_shape == (features,)
    assert source.num_classes == classes
    assert np.allclose(source.x_train.mean(axis=0), 0, atol=1e-4)
    assert np.allclose(source.x_train.std(axis=0), 1, atol=1e-3)
    assert abs(float(source.x_test.mean())) > 0  # scaled by train statistics, not its own


@pytest.mark.parametrize("loader", ["breast_cancer", "synthetic"])
def test_loader_splits_the_same_rows_every_call_and_stratifies(loader):
    a, b = getattr(tabular, loader)(), getattr(tabular, loader)()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    full = np.bincount(np.concatenate([a["y_train"], a["y_test"]]))
    test = np.bincount(a["y_test"], minlength=len(full))
    assert np.allclose(test / full, tabular.TEST_FRACTION, atol=0.02)
