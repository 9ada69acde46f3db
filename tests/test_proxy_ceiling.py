"""benchmarks/proxy_ceiling.py: the best validation accuracy over epochs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "proxy_ceiling.py"
_SPEC = importlib.util.spec_from_file_location("proxy_ceiling", _PATH)
proxy_ceiling = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(proxy_ceiling)


def _blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(size=(n, 2)).astype(np.float32) + 3.0 * y[:, None].astype(np.float32)
    return x, y.astype(np.int64)


def _head(seed: int) -> torch.nn.Module:
    """A 2 -> 2 linear head initialised from its own generator (no global seeding)."""
    head = torch.nn.Linear(2, 2)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in head.parameters():
            param.copy_(0.1 * torch.randn(param.shape, generator=gen))
    return head


def test_a_separable_set_is_learned_and_the_best_epoch_is_reported() -> None:
    head = _head(0)
    x, y = _blobs(200, 0)
    xv, yv = _blobs(100, 1)
    acc, epoch = proxy_ceiling.best_validation(head, x, y, xv, yv, lr=0.1, epochs=5, seed=0)
    assert acc > 0.9
    assert 1 <= epoch <= 5
    # Labels that say nothing about the inputs teach nothing on validation.
    noise = np.random.default_rng(2).integers(0, 2, 200)
    acc, _ = proxy_ceiling.best_validation(_head(1), x, noise, xv, yv, lr=0.1, epochs=5, seed=0)
    assert acc < 0.8


def test_soft_labels_are_distilled_and_the_best_epoch_weights_are_kept() -> None:
    x, y = _blobs(200, 0)
    xv, yv = _blobs(100, 1)
    teacher = _head(0)
    proxy_ceiling.best_validation(teacher, x, y, xv, yv, lr=0.1, epochs=5, seed=0)
    probs = proxy_ceiling.predict_probs(teacher, x)
    assert probs.shape == (200, 2)
    student = _head(1)
    acc, _ = proxy_ceiling.best_validation(
        student, x, probs, xv, yv, lr=0.1, epochs=5, seed=0, temperature=2.0
    )
    assert acc > 0.9
    # The head is left at its best epoch: scoring it again gives the best accuracy.
    assert proxy_ceiling.evaluate(student, xv, yv)[1] == acc
    # The same soft labels on shuffled rows say nothing about the inputs.
    shuffled = probs[np.random.default_rng(3).permutation(200)]
    acc, _ = proxy_ceiling.best_validation(_head(2), x, shuffled, xv, yv, lr=0.1, epochs=5, seed=0)
    assert acc < 0.8
