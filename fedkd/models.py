"""Model registry: built-in models, models registered from Python, import paths.

A model name in a config (``clients.models``, ``distill.student``) is a built-in name
(``linear``, ``mlp``, ``mlp_wide``, ``cnn``: all Opacus-compatible, no BatchNorm; ``cnn``
convolves images in 2-D and flat inputs ``(F,)`` in 1-D), a name given to
:func:`register_model` in this process, or an import path ``package.module:callable``.
A factory takes ``(input_shape, num_classes)`` and returns
an ``nn.Module`` whose output is ``(batch, num_classes)`` logits.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from functools import lru_cache

import torch
from torch import nn

from fedkd.importpath import ImportPathError, import_path_of, is_import_path, load_callable

logger = logging.getLogger(__name__)


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


class SmallCNN1d(nn.Module):
    """:class:`SmallCNN` for flat inputs ``(F,)``: the same blocks with Conv1d, 1 channel.

    The F features are read as a 1-channel signal of length F (at least 4).
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        if len(input_shape) != 1:
            raise ModelError(f"SmallCNN1d needs flat inputs (F,), got shape {input_shape}")
        (length,) = input_shape
        if length < 4:
            raise ModelError(f"model 'cnn' needs at least 4 features, got {length}")
        self.length = length
        self.features = nn.Sequential(
            nn.Conv1d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool1d(2),
            nn.Conv1d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool1d(2),
        )
        self.head = nn.Linear(32 * (length // 4), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], 1, self.length)  # (B, 1, F)
        return self.head(self.features(x).flatten(1))  # (B, classes)


def cnn(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The built-in ``cnn``: :class:`SmallCNN` on images, :class:`SmallCNN1d` on flat inputs.

    Images are ``(H, W)`` or ``(C, H, W)``; a flat input ``(F,)`` (tabular features, a 1-D
    signal) gets the same architecture with Conv1d over its F features, logged once.
    """
    if len(input_shape) == 1:
        _log_flat_cnn(int(input_shape[0]))
        return SmallCNN1d(input_shape, num_classes)
    return SmallCNN(input_shape, num_classes)


@lru_cache(maxsize=32)
def _log_flat_cnn(length: int) -> None:
    logger.info(
        "model 'cnn' on flat inputs of %d features: a 1-D CNN (Conv1d over the features as "
        "one channel); if the feature order means nothing, 'mlp' may suit better",
        length,
    )


ModelFactory = Callable[[tuple[int, ...], int], nn.Module]

MODELS: dict[str, ModelFactory] = {
    "linear": linear,
    "mlp": mlp,
    "mlp_wide": mlp_wide,
    "cnn": cnn,
}
BUILTIN = tuple(MODELS)


def register_model(name: str, factory: ModelFactory) -> str:
    """Make ``name`` usable wherever a model name is accepted, in this process.

    Parameters
    ----------
    name : str
        The name configs use; not a built-in name and without ``:``.
    factory : callable
        ``factory(input_shape, num_classes) -> nn.Module``.

    Returns
    -------
    str
        What a config should name to reach ``factory`` from any process: its import path
        when it has one (a module-level function or class of an importable module), else
        ``name``, which only this process knows (enough for ``runtime.backend:
        inprocess``; the Ray backend refuses it at preflight).

    Raises
    ------
    ModelError
        If ``name`` is a built-in or contains ``:``, or ``factory`` is not callable.
    """
    if name in BUILTIN or ":" in name or not name:
        raise ModelError(f"cannot register model '{name}': built-in names and ':' are reserved")
    if not callable(factory):
        raise ModelError(
            f"cannot register model '{name}': {type(factory).__name__} is not callable"
        )
    MODELS[name] = factory
    return import_path_of(factory) or name


def process_local(name: str) -> bool:
    """Whether ``name`` is a registered model that other processes cannot import."""
    return name in MODELS and name not in BUILTIN and import_path_of(MODELS[name]) is None


def portable_name(name: str) -> str:
    """``name``, or the import path of the factory registered under it when it has one."""
    if name in MODELS and name not in BUILTIN:
        return import_path_of(MODELS[name]) or name
    return name


def model_factory(name: str) -> ModelFactory:
    """The factory a model name stands for (built-in, registered or import path).

    Raises
    ------
    ModelError
        Unknown name, or an import path that cannot be imported or is not callable.
    """
    if name in MODELS:
        return MODELS[name]
    if is_import_path(name):
        try:
            return load_callable(name)
        except ImportPathError as err:
            raise ModelError(f"model '{name}': {err}") from err
    raise ModelError(
        f"unknown model '{name}' (choose from {', '.join(MODELS)}, or an import path "
        "'package.module:callable')"
    )


def build_model(
    name: str, input_shape: tuple[int, ...], num_classes: int, *, seed: int
) -> nn.Module:
    """Build a model with seeded initial weights.

    Parameters
    ----------
    name : str
        A built-in or registered name, or an import path (see :func:`model_factory`).
    input_shape : tuple of int
        Shape of one example, without the batch dimension.
    num_classes : int
        Output width.
    seed : int
        Seed for the initial weights. Torch's global generator is forked, so callers'
        random state is left untouched.

    Raises
    ------
    ModelError
        If the model cannot be found, its factory raises, or it returns no ``nn.Module``.
    """
    factory = model_factory(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            model = factory(tuple(input_shape), num_classes)
        except ModelError:
            raise
        except Exception as err:  # noqa: BLE001 - user factories may raise anything
            text = (str(err).strip().splitlines() or [""])[0]
            raise ModelError(f"model '{name}' raised {type(err).__name__}: {text}") from err
    if not isinstance(model, nn.Module):
        raise ModelError(f"model '{name}' returned a {type(model).__name__}, not an nn.Module")
    return model


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
