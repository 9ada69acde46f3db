"""Model registry. Every model is Opacus-compatible: no BatchNorm anywhere."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn


class ModelError(ValueError):
    """A model that cannot be built for the requested data (the message says why)."""


def _mlp(input_shape: tuple[int, ...], num_classes: int, hidden: tuple[int, ...]) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def linear(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Multinomial logistic regression: Flatten -> classes (few parameters: DP-friendly)."""
    return _mlp(input_shape, num_classes, ())


def mlp(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Flatten -> 128 -> classes."""
    return _mlp(input_shape, num_classes, (128,))


def mlp_wide(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Flatten -> 256 -> 256 -> classes (LayerNorm-free, deeper and wider than ``mlp``)."""
    return _mlp(input_shape, num_classes, (256, 256))


class SmallCNN(nn.Module):
    """Two 3x3 conv blocks with max-pooling, then a linear head.

    Works on any image at least 4x4 pixels: ``(H, W)`` or ``(channels, H, W)`` inputs.
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        if len(input_shape) == 2:
            channels, height, width = 1, *input_shape
        elif len(input_shape) == 3:
            channels, height, width = input_shape
        else:
            raise ModelError(
                f"model 'cnn' needs image inputs (H, W) or (C, H, W), got shape {input_shape}"
            )
        if height < 4 or width < 4:
            raise ModelError(f"model 'cnn' needs images of at least 4x4, got {height}x{width}")
        self.in_shape = (channels, height, width)
        self.features = nn.Sequential(
            nn.Conv2d(channels, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Linear(32 * (height // 4) * (width // 4), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], *self.in_shape)  # (B, C, H, W)
        return self.head(self.features(x).flatten(1))  # (B, classes)


MODELS: dict[str, Callable[[tuple[int, ...], int], nn.Module]] = {
    "linear": linear,
    "mlp": mlp,
    "mlp_wide": mlp_wide,
    "cnn": SmallCNN,
}


def build_model(
    name: str, input_shape: tuple[int, ...], num_classes: int, *, seed: int
) -> nn.Module:
    """Build a registered model with seeded initial weights.

    Parameters
    ----------
    name : str
        A key of :data:`MODELS`.
    input_shape : tuple of int
        Shape of one example, without the batch dimension.
    num_classes : int
        Output width.
    seed : int
        Seed for the initial weights. Torch's global generator is forked, so callers'
        random state is left untouched.
    """
    if name not in MODELS:
        raise ModelError(f"unknown model '{name}' (choose from {', '.join(MODELS)})")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MODELS[name](tuple(input_shape), num_classes)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
