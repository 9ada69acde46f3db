"""Knowledge-distillation loss and the local loops: train, digest (distill), predict."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn


def soften(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """Teacher probabilities at temperature ``T``: ``p^(1/T) / sum p^(1/T)``.

    Equal to ``softmax(z / T)`` when ``probs = softmax(z)``, so aggregated probabilities can
    be softened without the clients' logits.
    """
    if temperature == 1.0:
        return probs
    logp = torch.log(probs.clamp_min(1e-12)) / temperature  # (B, C)
    return torch.softmax(logp, dim=1)


def kd_loss(
    student_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Hinton et al. (2015) distillation loss.

    ``KL(teacher_T || softmax(student / T))`` averaged over the batch (``batchmean``, the
    true KL per example) and scaled by ``T**2`` so gradient magnitudes do not shrink as
    ``T`` grows.
    """
    log_student = F.log_softmax(student_logits / temperature, dim=1)  # (B, C)
    target = soften(teacher_probs, temperature)  # (B, C)
    return F.kl_div(log_student, target, reduction="batchmean") * temperature**2


def _batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    perm = torch.randperm(n, generator=generator)
    return [perm[i : i + batch_size] for i in range(0, n, batch_size)]


def train_supervised(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    generator: torch.Generator,
) -> float:
    """Cross-entropy training on labelled data; returns the mean loss (0.0 if no step)."""
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    model.train()
    total, count = 0.0, 0
    for _ in range(epochs):
        for idx in _batches(len(xt), batch_size, generator):
            loss = F.cross_entropy(model(xt[idx]), yt[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, count = total + loss.item() * len(idx), count + len(idx)
    return total / count if count else 0.0


def train_joint(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: np.ndarray,
    y: np.ndarray,
    x_public: np.ndarray,
    public_probs: np.ndarray,
    *,
    weight: float,
    epochs: int,
    batch_size: int,
    temperature: float,
    generator: torch.Generator,
) -> float:
    """Cross-entropy on labelled data with a distillation term on public data at every step.

    Each step pairs a batch of ``(x, y)`` with ``batch_size`` rows of ``x_public`` drawn
    uniformly (with replacement across steps) and minimises
    ``cross_entropy + weight * kd_loss(public batch, public_probs)``, so the model learns
    its own data without drifting away from the soft labels it was given, as Cronus's
    clients train on their private data and the labelled public set together (Chang,
    Shejwalkar, Shokri and Houmansadr, arXiv:1912.11279, 2019).

    Returns the mean cross-entropy on the labelled data (0.0 if no step), comparable to
    :func:`train_supervised`'s.
    """
    if weight < 0:
        raise ValueError(f"the distillation weight must be >= 0, got {weight}")
    if len(x_public) != len(public_probs) or len(x_public) == 0:
        raise ValueError(
            f"public inputs ({len(x_public)} rows) and soft labels ({len(public_probs)} rows) "
            "must be the same non-zero length"
        )
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    xp = torch.from_numpy(x_public)
    pp = torch.from_numpy(np.asarray(public_probs, dtype=np.float32))
    model.train()
    total, count = 0.0, 0
    for _ in range(epochs):
        for idx in _batches(len(xt), batch_size, generator):
            pub = torch.randint(0, len(xp), (batch_size,), generator=generator)
            ce = F.cross_entropy(model(xt[idx]), yt[idx])
            loss = ce + weight * kd_loss(model(xp[pub]), pp[pub], temperature)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, count = total + ce.item() * len(idx), count + len(idx)
    return total / count if count else 0.0


def random_shift(x: torch.Tensor, generator: torch.Generator, max_shift: int = 1) -> torch.Tensor:
    """Shift each image by up to ``max_shift`` pixels (zero padding): (B, H, W) or (B, C, H, W).

    Used on the public proxy only: a shifted digit keeps its teacher label, so the student
    sees more inputs at no privacy or communication cost.
    """
    if x.dim() < 3:
        return x
    b, (h, w) = x.shape[0], x.shape[-2:]
    padded = F.pad(x, (max_shift,) * 4)
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, b), generator=generator)
    rows = dy[:, None] + torch.arange(h)[None, :]  # (B, H)
    cols = dx[:, None] + torch.arange(w)[None, :]  # (B, W)
    lead = [slice(None)] * (x.dim() - 3)
    out = torch.stack([padded[(i, *lead, rows[i][:, None], cols[i][None, :])] for i in range(b)])
    return out


def mix(
    x: torch.Tensor, probs: torch.Tensor, lam: float, perm: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup of a batch with a permutation of itself (Zhang et al., ICLR 2018).

    Returns ``lam * x + (1 - lam) * x[perm]`` and the same mixture of the soft labels
    ``probs`` (B, C): a convex combination of two public proxy inputs is trained towards the
    same combination of their teacher labels. Works on any input shape (flat or image).
    """
    return lam * x + (1 - lam) * x[perm], lam * probs + (1 - lam) * probs[perm]


def _mixup_draw(generator: torch.Generator, alpha: float) -> np.random.Generator | None:
    """A NumPy generator for the Beta(alpha, alpha) mixing weights, seeded from ``generator``."""
    if alpha <= 0:
        return None
    return np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))


def cosine_factor(step: int, total: int) -> float:
    """The learning-rate factor of step ``step`` of ``total`` on a cosine from 1 to 0.

    ``(1 + cos(pi * step / total)) / 2`` (Loshchilov and Hutter, SGDR, ICLR 2017, one cycle
    without restarts): 1 at the first step, falling to near 0 at the last.
    """
    return 0.5 * (1.0 + math.cos(math.pi * step / total))


def train_distill(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: np.ndarray,
    teacher_probs: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    temperature: float,
    generator: torch.Generator,
    augment: bool = False,
    mixup: float = 0.0,
    cosine: bool = False,
) -> float:
    """Distil ``teacher_probs`` (N, C) into ``model`` on inputs ``x``; returns the mean loss.

    With ``augment``, image inputs are randomly shifted by one pixel (:func:`random_shift`).
    With ``mixup`` = alpha > 0, each batch is mixed with a permutation of itself
    (:func:`mix`), the weight drawn from Beta(alpha, alpha); 0 leaves the loop (and its
    random draws) exactly as without it. With ``cosine``, the optimizer's learning rates
    fall over the call's steps by :func:`cosine_factor` and are restored on return, so each
    call (each round) starts again from the configured rate.
    """
    xt = torch.from_numpy(x)
    pt = torch.from_numpy(np.asarray(teacher_probs, dtype=np.float32))
    rng = _mixup_draw(generator, mixup)
    base = [group["lr"] for group in optimizer.param_groups]
    steps = epochs * math.ceil(len(xt) / batch_size)
    model.train()
    total, count, step = 0.0, 0, 0
    for _ in range(epochs):
        for idx in _batches(len(xt), batch_size, generator):
            if cosine:
                for group, lr in zip(optimizer.param_groups, base, strict=True):
                    group["lr"] = lr * cosine_factor(step, steps)
            step += 1
            inputs = random_shift(xt[idx], generator) if augment else xt[idx]
            targets = pt[idx]
            if rng is not None:
                perm = torch.randperm(len(idx), generator=generator)
                inputs, targets = mix(inputs, targets, float(rng.beta(mixup, mixup)), perm)
            loss = kd_loss(model(inputs), targets, temperature)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, count = total + loss.item() * len(idx), count + len(idx)
    for group, lr in zip(optimizer.param_groups, base, strict=True):
        group["lr"] = lr
    return total / count if count else 0.0


@torch.no_grad()
def predict_probs(model: nn.Module, x: np.ndarray, batch_size: int = 2048) -> np.ndarray:
    """Softmax outputs (N, C) as float32."""
    model.eval()
    xt = torch.from_numpy(x)
    outs = [torch.softmax(model(xt[i : i + batch_size]), 1) for i in range(0, len(xt), batch_size)]
    return torch.cat(outs).numpy().astype(np.float32) if outs else np.zeros((0, 0), np.float32)


@torch.no_grad()
def evaluate(
    model: nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int = 2048
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy on labelled data."""
    model.eval()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    loss, correct = 0.0, 0
    for i in range(0, len(xt), batch_size):
        out = model(xt[i : i + batch_size])
        loss += F.cross_entropy(out, yt[i : i + batch_size], reduction="sum").item()
        correct += int((out.argmax(1) == yt[i : i + batch_size]).sum())
    n = max(len(xt), 1)
    return loss / n, correct / n


def make_optimizer(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """The optimizer every fedkd loop uses: SGD with momentum 0.9."""
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
