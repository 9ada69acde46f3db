"""A user's own models and data loader, importable as ``byom_user:...`` in tests."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits
from torch import nn


class TinyCNN(nn.Module):
    """A user's CNN for 8x8 images (one conv layer, GroupNorm: DP-SGD compatible)."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        self.shape = (1, *input_shape[-2:])
        self.body = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.GroupNorm(1, 8), nn.ReLU(), nn.Flatten()
        )
        self.head = nn.Linear(8 * input_shape[-2] * input_shape[-1], num_classes)

    def forward(self, x):
        return self.head(self.body(x.reshape(x.shape[0], *self.shape)))


def with_batchnorm(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """An MLP with BatchNorm: fine without DP, refused under DP-SGD."""
    width = int(np.prod(input_shape))
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(width, 32),
        nn.BatchNorm1d(32),
        nn.ReLU(),
        nn.Linear(32, num_classes),
    )


def wrong_width(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Outputs one logit too few."""
    return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(input_shape)), num_classes - 1))


def not_a_module(input_shape: tuple[int, ...], num_classes: int) -> int:
    return 3


NOT_CALLABLE = 42


def digits_arrays() -> dict[str, np.ndarray]:
    """sklearn digits as uint8 images with a test split and a proxy set of their own."""
    x, y = load_digits(return_X_y=True)
    x = (x.reshape(-1, 8, 8) * 15.9).astype(np.uint8)
    return {
        "x_train": x[:1000],
        "y_train": y[:1000],
        "x_test": x[1000:1400],
        "y_test": y[1000:1400],
        "x_proxy": x[1400:],
        "y_proxy": y[1400:],
    }


def labels_out_of_range() -> dict[str, np.ndarray]:
    x, y = load_digits(return_X_y=True)
    return {"x_train": x / 16.0, "y_train": y, "num_classes": 5}
