"""Label propagation over the proxy's kNN graph: graph shape, fixed point, denoising."""

from __future__ import annotations

import numpy as np
import pytest

from fedkd.propagate import knn_graph, propagate


def _clusters(per: int = 30, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = np.concatenate([c + rng.standard_normal((per, 2)) for c in centres])  # (3*per, 2)
    y = np.repeat(np.arange(3), per)
    return x.astype(np.float32), y


def test_knn_graph_rows_sum_to_one_without_self_loops_and_is_symmetric_in_support():
    x, _ = _clusters()
    w = knn_graph(x, 4)
    np.testing.assert_allclose(np.asarray(w.sum(axis=1)).ravel(), 1.0)
    assert np.all(w.diagonal() == 0)
    support = (w > 0).toarray()
    assert np.array_equal(support, support.T)
    assert support.sum(axis=1).min() >= 4


def test_knn_graph_matches_brute_force_neighbours_across_chunks(monkeypatch):
    import fedkd.propagate as mod

    monkeypatch.setattr(mod, "_CHUNK", 7)  # several chunks for 90 rows
    x, _ = _clusters()
    w = knn_graph(x, 3)
    d = ((x[:, None] - x[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    nearest = np.argsort(d, axis=1)[:, :3]
    support = (w > 0).toarray()
    assert all(support[i, nearest[i]].all() for i in range(len(x)))


def test_propagation_reaches_the_closed_form_fixed_point():
    x, y = _clusters(per=10)
    rng = np.random.default_rng(1)
    t = rng.dirichlet(np.ones(3), size=len(x))
    alpha = 0.8
    w = knn_graph(x, 4).toarray()
    expected = (1 - alpha) * np.linalg.solve(np.eye(len(x)) - alpha * w, t)
    expected /= expected.sum(axis=1, keepdims=True)
    got = propagate(x, t, neighbors=4, alpha=alpha, tol=1e-12, max_iter=5000)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_propagation_corrects_noisy_labels_inside_clusters():
    x, y = _clusters()
    rng = np.random.default_rng(2)
    noisy = np.eye(3)[y] * 0.6 + 0.4 / 3
    flip = rng.random(len(y)) < 0.3
    noisy[flip] = np.eye(3)[(y[flip] + 1) % 3] * 0.6 + 0.4 / 3  # 30 % wrong labels
    before = (noisy.argmax(1) == y).mean()
    after = (propagate(x, noisy, neighbors=5, alpha=0.9).argmax(1) == y).mean()
    assert before < 0.8
    assert after > 0.95


def test_alpha_zero_returns_the_labels_and_bad_arguments_are_refused():
    x, y = _clusters(per=5)
    t = np.eye(3)[y].astype(np.float32)
    np.testing.assert_array_equal(propagate(x, t, alpha=0.0), t)
    with pytest.raises(ValueError, match="alpha"):
        propagate(x, t, alpha=1.0)
    with pytest.raises(ValueError, match="probs must be"):
        propagate(x, t[:-1])
    with pytest.raises(ValueError, match="neighbors"):
        knn_graph(x, 0)


def test_unlabelled_rows_receive_their_clusters_label_and_isolated_rows_stay_empty():
    x, y = _clusters()
    t = np.zeros((len(y), 3))
    seeds = [0, 30, 60]  # one labelled row per cluster
    t[seeds] = np.eye(3)[y[seeds]]
    # A separate six-row component: its 4 nearest neighbours stay inside it.
    island = np.array([[1e4, 1e4]]) + np.arange(6)[:, None] * np.array([[1.0, 0.0]])
    got = propagate(np.vstack([x, island]), np.vstack([t, np.zeros((6, 3))]), neighbors=4)
    assert (got[:-6].argmax(1) == y).mean() == 1.0
    np.testing.assert_allclose(got[:-6].sum(axis=1), 1.0, atol=1e-6)
    assert np.all(got[-6:] == 0)


def test_a_precomputed_graph_gives_the_same_labels_and_a_wrong_one_is_refused():
    x, y = _clusters(per=8)
    t = np.eye(3)[y]
    g = knn_graph(x, 4)
    np.testing.assert_array_equal(
        propagate(x, t, neighbors=4, graph=g), propagate(x, t, neighbors=4)
    )
    with pytest.raises(ValueError, match="graph must be"):
        propagate(x, t, graph=knn_graph(x[:-1], 4))
