"""Data plumbing of ``central_dpsgd_tune.py``: splits, the anchors' digits split, and an
on-disk cache of fixed features (the scattering of Fashion-MNIST takes minutes).

Nothing here is written inside the repository: cached features go under
``$XDG_CACHE_HOME/fedkd-bench`` (default ``~/.cache/fedkd-bench``).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from fedkd import features


def stratified_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, held_out)``: ``round(fraction * n_c)`` of each class ``c`` are
    held out, chosen by a generator seeded with ``seed``."""
    rng = np.random.default_rng(seed)
    held = []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        held.append(idx[: int(round(fraction * len(idx)))])
    held_idx = np.sort(np.concatenate(held))
    train_idx = np.setdiff1d(np.arange(len(y)), held_idx)
    return train_idx, held_idx


def stratified_folds(y: np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` pairs ``(train, validation)`` of indices: each class is permuted by a generator
    seeded with ``seed`` and dealt round-robin to the folds, so every example is in exactly
    one validation fold and the folds keep the class proportions."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(y), dtype=np.int64)
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        fold[idx] = np.arange(len(idx)) % k
    return [(np.flatnonzero(fold != f), np.flatnonzero(fold == f)) for f in range(k)]


def anchor_digits(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train, y_train, x_test, y_test)``: a plain stratified 80/20 split (by ``seed``)
    of all 1,797 scikit-learn digits, scaled to [0, 1] as fedkd's ``digits`` source (the
    split of the published digits DP-SGD anchors: 1,438 train, 359 test, no public proxy)."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (np.asarray(x, dtype=np.float64) / 16.0).astype(np.float32).reshape(-1, 8, 8)
    y = np.asarray(y, dtype=np.int64)
    train, test = stratified_split(y, 0.2, seed)
    return x[train], y[train], x[test], y[test]


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/fedkd-bench`` (default ``~/.cache/fedkd-bench``), created."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    path = root / "fedkd-bench"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _code_digest() -> str:
    """Hash of the feature code (a change to it invalidates the cache)."""
    from fedkd import scattering

    h = hashlib.blake2b(digest_size=8)
    for module in (features, scattering):
        h.update(Path(module.__file__).read_bytes())
    return h.hexdigest()


def cache_features_on_disk() -> None:
    """Make :meth:`fedkd.features.PublicFeatures.transform_array` keep its results in
    :func:`cache_dir` too, keyed by the map's key (transform, input shape, scattering J
    and L, PCA and its proxy), the input array's content hash and the feature code's hash.
    For this benchmark process only; the library is unchanged."""
    original = features.PublicFeatures.transform_array
    code, loaded = _code_digest(), {}

    def transform_array(self, x: np.ndarray, chunk: int = 1000) -> np.ndarray:
        t = self.transform
        params = f"J{t.j_scales}L{t.orientations}" if hasattr(t, "j_scales") else ""
        key = hashlib.blake2b(
            f"{self.key}|{params}|{features.content_key(x)}|{code}".encode(), digest_size=16
        ).hexdigest()
        path = cache_dir() / f"features-{key}.npy"
        if key not in loaded:
            if path.exists():
                loaded[key] = np.load(path)
            else:
                loaded[key] = original(self, x, chunk)  # the same array the library caches
                tmp = path.with_suffix(".tmp.npy")
                np.save(tmp, loaded[key])
                tmp.replace(path)
        return loaded[key]

    features.PublicFeatures.transform_array = transform_array
