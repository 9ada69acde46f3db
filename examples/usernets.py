"""A user's own models and data loader, kept outside fedkd.

fedkd reaches them by import path (``usernets:OwnCNN``, ``py:usernets:signals``), so this
folder must be importable: run the examples from it, or put it on ``PYTHONPATH``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

SIGNAL_LENGTH = 64
SIGNAL_CLASSES = 4


class OwnCNN(nn.Module):
    """A small image CNN with GroupNorm (not BatchNorm, so DP-SGD can train it too)."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        height, width = input_shape[-2:]
        self.image = (1, height, width)
        self.body = nn.Sequential(
            nn.Conv2d(1, 12, 3, padding=1),
            nn.GroupNorm(3, 12),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.head = nn.Linear(12 * (height // 2) * (width // 2), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x.reshape(x.shape[0], *self.image)))  # (B, classes)


class SignalNet(nn.Module):
    """A 1-D CNN for signals of shape ``(length,)``: two Conv1d blocks, global pooling."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv1d(1, 16, 7, padding=3),
            nn.ReLU(),
            nn.MaxPool1d(2),
            nn.Conv1d(16, 16, 5, padding=2),
            nn.ReLU(),
            nn.AdaptiveAvgPool1d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x.reshape(x.shape[0], 1, -1)))  # (B, classes)


def signals(n: int = 2400, seed: int = 0) -> dict[str, np.ndarray]:
    """A synthetic 1-D data set, generated (never stored) by this documented procedure.

    Class ``k`` of ``SIGNAL_CLASSES`` is a sine of ``k + 2`` cycles over
    ``SIGNAL_LENGTH`` samples, with a uniform random phase, amplitude in ``[0.5, 1.5]``
    and Gaussian noise of standard deviation 0.6, all drawn from ``seed``. The first 60 %
    are training data, the next 20 % test data and the last 20 % an unlabelled-in-spirit
    public proxy set (its labels only measure the teacher).
    """
    rng = np.random.default_rng(seed)
    y = rng.integers(0, SIGNAL_CLASSES, n)
    t = np.arange(SIGNAL_LENGTH) / SIGNAL_LENGTH  # (L,)
    phase = rng.uniform(0, 2 * np.pi, (n, 1))
    amplitude = rng.uniform(0.5, 1.5, (n, 1))
    x = amplitude * np.sin(2 * np.pi * (y[:, None] + 2) * t + phase)  # (N, L)
    x = (x + rng.normal(0, 0.6, x.shape)).astype(np.float32)
    a, b = int(0.6 * n), int(0.8 * n)
    return {
        "x_train": x[:a],
        "y_train": y[:a],
        "x_test": x[a:b],
        "y_test": y[a:b],
        "x_proxy": x[b:],
        "y_proxy": y[b:],
        "num_classes": SIGNAL_CLASSES,
    }
