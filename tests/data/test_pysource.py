"""``py:`` data sources: the loader's dict is checked and converted, errors name the source."""

from __future__ import annotations

import numpy as np
import pytest

from fedkd.data import DataError, build_splits, load_source, register_source


def _arrays(**extra):
    rng = np.random.default_rng(0)
    base = {"x_train": rng.random((60, 4, 4)), "y_train": np.arange(60) % 3}
    return {**base, **extra}


def _spec(name, arrays):
    return register_source(name, lambda: arrays)


def test_loader_arrays_become_a_source_with_its_own_test_and_proxy_sets():
    x = np.zeros((10, 4, 4), np.uint8) + 255
    spec = _spec("ok", _arrays(x_test=x, y_test=np.arange(10) % 3, x_proxy=x[:6]))

    splits = build_splits(spec, seed=0)

    assert splits.x_test.dtype == np.float32 and splits.x_test.max() == 1.0  # uint8 / 255
    assert len(splits.x_proxy) == 6 and (splits.y_proxy == -1).all()  # proxy labels unknown
    assert len(splits.y_private) == 60 and splits.num_classes == 3


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"x_test": np.zeros((5, 4, 4))}, "give both x_test and y_test"),
        ({"x_test": np.zeros((5, 3, 3)), "y_test": np.zeros(5, int)}, "test examples have shape"),
        ({"x_proxy": np.zeros((5, 2))}, "proxy examples have shape"),
        ({"y_train": np.arange(59)}, "60 feature rows but 59 labels"),
        ({"y_train": -np.ones(60, int)}, "labels must be non-negative"),
        ({"y_train": np.full(60, 0.5)}, "labels must be integers"),
        ({"x_train": np.array([["a"] * 16] * 60).reshape(60, 4, 4)}, "features must be numeric"),
        ({"num_classes": 2}, "y_train has label 2 >= num_classes=2"),
        ({"x_tain": np.zeros(3)}, "unknown key(s) x_tain"),
    ],
)
def test_bad_loader_arrays_raise_one_line_naming_the_source(extra, needle):
    spec = _spec("bad", _arrays(**extra))

    with pytest.raises(DataError) as excinfo:
        load_source(spec)

    assert str(excinfo.value).startswith("py:bad: ")
    assert needle in str(excinfo.value) and "\n" not in str(excinfo.value)


def test_a_loader_that_returns_no_dict_is_named():
    spec = register_source("tuple", lambda: (1, 2))

    with pytest.raises(DataError, match="py:tuple: the loader returned a tuple, not a dict"):
        load_source(spec)
