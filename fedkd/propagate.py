"""Label propagation over the public proxy set: smooth teacher labels along the data manifold.

Neighbouring proxy inputs usually share a class, so a noisy teacher label is corrected by
its neighbours' labels. This is the "local and global consistency" iteration of Zhou et
al. (NeurIPS 2004): with ``W`` the row-normalised symmetric k-nearest-neighbour graph of
the proxy inputs and ``T`` the teacher labels,

    F <- alpha * W @ F + (1 - alpha) * T,

iterated to its fixed point ``F* = (1 - alpha) (I - alpha W)^-1 T``. Rows without a
teacher label start at zero and receive labels from labelled neighbours, so a few
well-labelled rows can label the whole proxy set. It reads only the
public proxy inputs and the already released teacher labels, so it is post-processing:
it costs no privacy under any of the three DP paths.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

_CHUNK = 1024


def knn_graph(x: np.ndarray, neighbors: int) -> sparse.csr_matrix:
    """Row-normalised symmetric k-nearest-neighbour graph (Euclidean, no self loops).

    Parameters
    ----------
    x : np.ndarray
        (N, ...) inputs; flattened to (N, D).
    neighbors : int
        k >= 1; capped at N - 1.

    Returns
    -------
    scipy.sparse.csr_matrix
        (N, N) with rows summing to 1 (``A = max(K, K^T)`` of the kNN indicator ``K``).
    """
    flat = np.asarray(x, dtype=np.float32).reshape(len(x), -1)  # (N, D)
    n = len(flat)
    if neighbors < 1:
        raise ValueError(f"neighbors must be >= 1, got {neighbors}")
    k = min(neighbors, n - 1)
    if k < 1:
        return sparse.identity(n, format="csr", dtype=np.float64)
    sq = (flat.astype(np.float64) ** 2).sum(axis=1)  # (N,)
    cols = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, _CHUNK):
        block = flat[start : start + _CHUNK].astype(np.float64)  # (b, D)
        d = sq[start : start + len(block), None] + sq[None, :] - 2.0 * block @ flat.T  # (b, N)
        d[np.arange(len(block)), np.arange(start, start + len(block))] = np.inf
        part = np.argpartition(d, k - 1, axis=1)[:, :k]  # (b, k) unordered k nearest
        cols[start : start + len(block)] = part
    rows = np.repeat(np.arange(n), k)
    knn = sparse.csr_matrix((np.ones(n * k), (rows, cols.reshape(-1))), shape=(n, n))
    sym = knn.maximum(knn.T).tocsr()
    degree = np.asarray(sym.sum(axis=1)).reshape(-1)  # (N,) >= k
    return sparse.diags(1.0 / degree) @ sym


def propagate(
    x: np.ndarray,
    probs: np.ndarray,
    *,
    neighbors: int = 5,
    alpha: float = 0.9,
    tol: float = 1e-6,
    max_iter: int = 500,
    graph: sparse.csr_matrix | None = None,
) -> np.ndarray:
    """Smooth soft labels ``probs`` over the kNN graph of ``x``.

    Parameters
    ----------
    x : np.ndarray
        (N, ...) public inputs the labels belong to.
    probs : np.ndarray
        (N, C) teacher labels, rows summing to 1, or all zero for unlabelled rows.
    neighbors : int
        k of the kNN graph.
    alpha : float
        In [0, 1): weight of the neighbours against the row's own label; 0 returns
        ``probs`` unchanged.
    tol, max_iter :
        Stop when the largest change is below ``tol`` (converges geometrically, rate alpha).
    graph : scipy.sparse.csr_matrix, optional
        ``knn_graph(x, neighbors)`` computed once by the caller (the proxy set does not
        change during a run); built here when omitted.

    Returns
    -------
    np.ndarray
        (N, C) float32 propagated labels: rows summing to 1, or all zero for a row that no
        label reached (unlabelled and not connected to a labelled row).
    """
    t = np.asarray(probs, dtype=np.float64)
    if t.ndim != 2 or len(t) != len(x):
        raise ValueError(f"probs must be (N, C) with N = len(x) = {len(x)}, got {t.shape}")
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"alpha must be in [0, 1), got {alpha}")
    if alpha == 0.0 or len(t) < 2:
        return t.astype(np.float32)
    w = knn_graph(x, neighbors) if graph is None else graph
    if w.shape != (len(t), len(t)):
        raise ValueError(f"graph must be ({len(t)}, {len(t)}), got {w.shape}")
    f = t.copy()
    for _ in range(max_iter):
        nxt = alpha * (w @ f) + (1.0 - alpha) * t
        done = np.abs(nxt - f).max() < tol
        f = nxt
        if done:
            break
    mass = f.sum(axis=1, keepdims=True)  # (N, 1)
    reached = mass[:, 0] > 1e-12
    f[reached] /= mass[reached]
    f[~reached] = 0.0
    return f.astype(np.float32)
