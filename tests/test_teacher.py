"""The teacher cache: latest teacher per row, or its moving average over rounds."""

from __future__ import annotations

import numpy as np
import pytest

from fedkd.teacher import TeacherCache


def _probs(rows: list[list[float]]) -> np.ndarray:
    return np.asarray(rows, np.float32)


def test_without_decay_a_row_takes_its_latest_teacher():
    cache = TeacherCache.empty(4, 2)
    cache.update(np.array([0, 1]), _probs([[0.9, 0.1], [0.2, 0.8]]))
    cache.update(np.array([1, 2]), _probs([[0.6, 0.4], [0.5, 0.5]]))
    np.testing.assert_array_equal(cache.rows(), [0, 1, 2])
    np.testing.assert_allclose(cache.probs[:3], [[0.9, 0.1], [0.6, 0.4], [0.5, 0.5]])
    np.testing.assert_array_equal(cache.probs[3], [0.0, 0.0])


def test_decay_averages_a_rows_teachers_and_takes_its_first_as_it_is():
    cache = TeacherCache.empty(3, 2, decay=0.75)
    cache.update(np.array([0, 1]), _probs([[1.0, 0.0], [0.0, 1.0]]))
    np.testing.assert_allclose(cache.probs[:2], [[1.0, 0.0], [0.0, 1.0]])  # first: as is
    cache.update(np.array([1, 2]), _probs([[1.0, 0.0], [0.2, 0.8]]))
    # Row 1 was labelled: 0.75 * old + 0.25 * new; row 2 is new; row 0 was not asked.
    np.testing.assert_allclose(cache.probs[1], [0.25, 0.75])
    np.testing.assert_allclose(cache.probs[2], [0.2, 0.8])
    np.testing.assert_allclose(cache.probs[0], [1.0, 0.0])
    cache.update(np.array([1]), _probs([[1.0, 0.0]]))
    np.testing.assert_allclose(cache.probs[1], [0.4375, 0.5625])
    np.testing.assert_allclose(cache.probs.sum(1)[cache.labelled], 1.0, rtol=1e-6)


@pytest.mark.parametrize("decay", [0.0, 0.5])
def test_the_arrays_are_the_whole_state(decay):
    # A checkpoint stores probs and labelled; a cache rebuilt from them continues the same.
    rng = np.random.default_rng(0)
    a = TeacherCache.empty(5, 3, decay)
    first = rng.dirichlet(np.ones(3), 5).astype(np.float32)
    second = rng.dirichlet(np.ones(3), 3).astype(np.float32)
    a.update(np.arange(5), first)
    b = TeacherCache.empty(5, 3, decay)
    b.probs[:], b.labelled[:] = a.probs, a.labelled
    for cache in (a, b):
        cache.update(np.array([0, 2, 4]), second)
    np.testing.assert_array_equal(a.probs, b.probs)
    changed = not np.allclose(a.probs[[0, 2, 4]], second)
    assert changed == (decay > 0)
