"""Start-of-run checks of a model: it runs, has the right output, suits DP-SGD.

Built-in models pass by construction; these checks are for models users bring
(``clients.models`` / ``distill.student`` naming a registered factory or an import path).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fedkd.features import split_features
from fedkd.models import BUILTIN, MODELS, ModelError, portable_name, process_local


def check_portable(name: str, key: str) -> None:
    """Refuse a model name that Ray workers cannot resolve: one registered in this process.

    Ray workers know the built-in names and import paths only. :func:`fedkd.simulations.api.run`
    turns a registered name into its factory's import path when it has one.

    Raises
    ------
    ModelError
        Naming ``key`` and what to do instead.
    """
    if name in BUILTIN or name not in MODELS:
        return
    path = portable_name(name)
    if path != name:
        raise ModelError(
            f"{key}: model '{name}' is registered in this process only; Ray workers need its "
            f"import path '{path}' (fedkd.simulations.api.run passes it for you)"
        )
    if process_local(name):
        raise ModelError(
            f"{key}: model '{name}' is registered in this process only (a lambda, closure or "
            "__main__ object), so Ray workers cannot build it; define it at module level in "
            "an importable module, name it by import path, or use runtime.backend=inprocess"
        )


def check_model(
    model: nn.Module, name: str, key: str, x_sample: np.ndarray, num_classes: int, *, dpsgd: bool
) -> None:
    """Run ``model`` on a few examples and check what DP-SGD needs.

    Parameters
    ----------
    model : nn.Module
        The model as the run builds it (with its fixed public features, if any).
    name, key : str
        The model's name and the config key that named it, for messages.
    x_sample : np.ndarray
        (B, ...) a few inputs of the run's data, B >= 1.
    num_classes : int
        The output width the run expects.
    dpsgd : bool
        Whether the model is trained with DP-SGD: then its trainable part must pass
        Opacus's module validator (no BatchNorm, ...).

    Raises
    ------
    ModelError
        One line naming ``key``, the model and the problem.
    """
    batch = len(x_sample)
    with torch.no_grad():
        try:
            out = model.eval()(torch.as_tensor(np.ascontiguousarray(x_sample)))
        except Exception as err:  # noqa: BLE001 - a user model may raise anything
            raise ModelError(
                f"{key}: model '{name}' fails on a batch of shape {tuple(x_sample.shape)} "
                f"({type(err).__name__}: {_one_line(err)})"
            ) from err
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (batch, num_classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelError(
            f"{key}: model '{name}' gives output {got} for a batch of {batch}, expected "
            f"({batch}, {num_classes}) logits"
        )
    if dpsgd:
        from fedkd.privacy.dpsgd import refuse_batchnorm

        try:
            refuse_batchnorm(split_features(model)[1])
        except ValueError as err:
            raise ModelError(
                f"{key}: model '{name}' under privacy.mechanisms=dpsgd: {_one_line(err)}"
            ) from err


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__
