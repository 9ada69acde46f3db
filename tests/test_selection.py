"""Selective-FD's server-side selector: entropy of teacher rows and the rows kept."""

from __future__ import annotations

import numpy as np
import pytest

from fedkd.selection import normalized_entropy, unambiguous


def test_entropy_is_zero_for_one_hot_one_for_uniform_and_between_otherwise():
    p = np.array([[1.0, 0.0, 0.0, 0.0], [0.25] * 4, [0.5, 0.5, 0.0, 0.0]])
    h = normalized_entropy(p)
    assert h[0] == pytest.approx(0.0, abs=1e-9)
    assert h[1] == pytest.approx(1.0)
    assert h[2] == pytest.approx(np.log(2) / np.log(4))  # two equal classes of four: 0.5


def test_rows_above_the_threshold_are_dropped_and_one_keeps_every_row():
    p = np.array([[0.97, 0.01, 0.01, 0.01], [0.25] * 4, [0.5, 0.5, 0.0, 0.0]])
    assert unambiguous(p, 0.55).tolist() == [True, False, True]
    assert unambiguous(p, 0.4).tolist() == [True, False, False]
    assert unambiguous(p, 1.0).all()


@pytest.mark.parametrize("bad", [0.0, -0.2, 1.01])
def test_threshold_outside_zero_one_is_refused_naming_the_key(bad):
    with pytest.raises(ValueError, match="distill.max_entropy"):
        unambiguous(np.full((2, 2), 0.5), bad)
