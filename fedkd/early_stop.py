"""Longer server distillation, stopped early on proxy rows held out of it.

The server distils the teacher into the student for up to ``distill.epochs`` epochs each
round; with ``distill.early_stop`` = k > 0 it holds a share of the labelled proxy rows
out (``distill.holdout_fraction``), measures the distillation loss on them after every
epoch and stops once it has not improved for k epochs, keeping the weights of the best
epoch. Early stopping on held-out data is the classical guard against fitting the
training rows too well (Prechelt, "Early stopping - but when?", 1998); in federated
distillation the rows a student over-fits are the proxy rows and their teacher labels
(the diagnosis in docs/distillation.md: the student reproduces the teacher on the proxy
and loses 6 points from proxy to test on the synthetic set).

The held-out rows are public proxy inputs with released teacher labels, so the stopping
rule is post-processing of the release (no privacy cost) and needs no labelled data on
the server. The validation split (``data.validation_fraction``) is deliberately not used:
it is what settings are chosen on, and a deployed server has no labelled private data.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import nn

from fedkd.distill import kd_loss, train_distill

__all__ = ["holdout_split", "train_distill_early_stop"]


def holdout_split(
    n: int, fraction: float, generator: torch.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Random (train, held-out) row indices; ``ceil(fraction * n)`` held out, at least one
    row on each side when ``n >= 2`` (``n < 2``: nothing held out).
    """
    if not 0 < fraction < 1:
        raise ValueError(f"distill.holdout_fraction must be in (0, 1), got {fraction}")
    perm = torch.randperm(n, generator=generator).numpy()
    if n < 2:
        return perm, perm[:0]
    k = min(max(1, math.ceil(fraction * n)), n - 1)
    return np.sort(perm[k:]), np.sort(perm[:k])


@torch.no_grad()
def _held_out_loss(model: nn.Module, x: torch.Tensor, p: torch.Tensor, t: float) -> float:
    model.eval()
    loss = float(kd_loss(model(x), p, t))
    model.train()
    return loss


def train_distill_early_stop(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: np.ndarray,
    teacher_probs: np.ndarray,
    *,
    max_epochs: int,
    patience: int,
    holdout_fraction: float,
    generator: torch.Generator,
    **loop: object,
) -> tuple[float, int]:
    """:func:`fedkd.distill.train_distill`, one epoch at a time, stopped early.

    Parameters
    ----------
    model, optimizer, x, teacher_probs, generator
        As for :func:`~fedkd.distill.train_distill`.
    max_epochs : int
        The most epochs run.
    patience : int
        Stop after this many epochs without a lower held-out loss (>= 1).
    holdout_fraction : float
        Share of the rows held out of training to measure that loss on, in (0, 1).
    **loop
        ``batch_size``, ``temperature``, ``augment``, ``mixup`` of ``train_distill``.

    Returns
    -------
    tuple of (float, int)
        The best held-out distillation loss (the train loss when nothing could be held
        out) and the epoch whose weights the model ends with (0: the weights it came with).
    """
    if patience < 1:
        raise ValueError(f"distill.early_stop must be >= 1, got {patience}")
    train, held = holdout_split(len(x), holdout_fraction, generator)
    if len(held) == 0:
        loss = train_distill(
            model, optimizer, x, teacher_probs, epochs=max_epochs, generator=generator, **loop
        )
        return loss, max_epochs
    xh = torch.from_numpy(x[held])
    ph = torch.from_numpy(np.asarray(teacher_probs[held], dtype=np.float32))
    temperature = float(loop["temperature"])  # type: ignore[arg-type]
    best, best_epoch = _held_out_loss(model, xh, ph, temperature), 0
    best_state = copy.deepcopy(model.state_dict())
    for epoch in range(1, max_epochs + 1):
        train_distill(
            model, optimizer, x[train], teacher_probs[train], epochs=1, generator=generator, **loop
        )
        loss = _held_out_loss(model, xh, ph, temperature)
        if loss < best:
            best, best_epoch, best_state = loss, epoch, copy.deepcopy(model.state_dict())
        elif epoch - best_epoch >= patience:
            break
    model.load_state_dict(best_state)
    return best, best_epoch
