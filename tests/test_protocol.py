"""The proxy rows a round asks for: a count or a share of the proxy."""

from __future__ import annotations

import numpy as np
import pytest

from fedkd.protocol import proxy_subset, rows_per_round


@pytest.mark.parametrize(
    ("per_round", "num_proxy", "rows"),
    [
        (150, 432, 150),  # a count is a count
        (0, 432, 432),  # 0: the whole proxy
        (500, 432, 432),  # more than the proxy: the whole proxy
        (0.35, 432, 151),  # a share, rounded to the nearest count
        (0.35, 137, 48),
        (0.35, 480, 168),
        (1.0, 137, 137),
        (0.001, 137, 1),  # never no rows
    ],
)
def test_rows_per_round_reads_integers_as_counts_and_floats_as_shares(per_round, num_proxy, rows):
    assert rows_per_round(per_round, num_proxy) == rows


@pytest.mark.parametrize("share", [0.0, -0.2, 1.5])
def test_a_share_outside_zero_to_one_is_refused(share):
    with pytest.raises(ValueError, match="share of the proxy"):
        rows_per_round(share, 100)


def test_proxy_subset_of_a_share_has_that_many_distinct_sorted_rows():
    idx = proxy_subset(480, 0.35, seed=3, server_round=2)
    assert len(idx) == 168 and len(np.unique(idx)) == 168
    assert np.all(np.diff(idx) > 0) and idx.min() >= 0 and idx.max() < 480
    assert np.array_equal(idx, proxy_subset(480, 168, seed=3, server_round=2))
