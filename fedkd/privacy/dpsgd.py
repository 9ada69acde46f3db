"""Example-level DP-SGD for a client's private data (Opacus), one accountant for the whole run.

Each call to :func:`dp_train` wraps the caller's model with a fresh Opacus
``PrivacyEngine``, trains, and unwraps it again. Opacus' own accountant is not used: the
run's DP-SGD history is ``(σ, q, steps)`` with σ and q fixed for the run, so
:class:`DPSGDState` keeps the step count and :func:`epsilon_of` recomputes ε from it with
fedkd's enforced accountant (PLD, replace-one; see :mod:`fedkd.privacy.accounting`). The
predictions a client later shares on public proxy data are post-processing of the DP-SGD
model and cost nothing more.

Sampling is Poisson (``poisson_sampling=True``): the accountant's q is ``1/ceil(n/B)`` and
empty Poisson batches still take a (pure-noise) optimizer step and an accountant step.

Randomness: the Poisson batches and the noise come from the ``generator`` the caller
passes, which must be seeded from the OS (:func:`fedkd.privacy.entropy.torch_generator`),
never from the run's ``seed``. Opacus ``secure_mode`` needs torchcsprng, which has no
build for torch 2.x, so the Gaussian noise comes from torch's generator without the
floating-point hardening of secure mode.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fedkd.privacy.ledger import Release

logger = logging.getLogger(__name__)

_SEED_HIGH = 2**62


@dataclass
class DPSGDState:
    """Everything needed to continue a client's DP-SGD accounting across rounds.

    Attributes
    ----------
    noise_multiplier : float
        σ, calibrated once for all planned steps of the run.
    max_grad_norm : float
        Per-example clipping norm C.
    sample_rate : float
        Poisson rate q; must equal ``1 / ceil(n / batch_size)`` (see :func:`sample_rate_for`).
    steps : int
        DP-SGD steps taken so far (the accountant's history is ``(σ, q, steps)``).
    """

    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float
    steps: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable copy of the state."""
        return {
            "noise_multiplier": float(self.noise_multiplier),
            "max_grad_norm": float(self.max_grad_norm),
            "sample_rate": float(self.sample_rate),
            "steps": int(self.steps),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DPSGDState:
        """Inverse of :meth:`to_dict`."""
        return cls(
            noise_multiplier=float(data["noise_multiplier"]),
            max_grad_norm=float(data["max_grad_norm"]),
            sample_rate=float(data["sample_rate"]),
            steps=int(data.get("steps", 0)),
        )


def sample_rate_for(n_examples: int, batch_size: int) -> float:
    """The Poisson rate Opacus accounts for: ``1 / len(DataLoader) = 1 / ceil(n / B)``."""
    if n_examples < 1 or batch_size < 1:
        raise ValueError(
            f"need n_examples >= 1 and batch_size >= 1, got {n_examples} and {batch_size}"
        )
    return 1.0 / math.ceil(n_examples / batch_size)


def refuse_batchnorm(model: nn.Module) -> None:
    """Refuse a model that Opacus' ``ModuleValidator`` rejects (BatchNorm, plain LSTM, ...).

    BatchNorm mixes examples of a batch, so per-example clipping no longer bounds one
    example's influence. Automatic fixing is not attempted: ``ModuleValidator.fix`` turns a
    ``BatchNorm1d(c)`` on flat features into ``GroupNorm(c, c)``, whose output is constant.

    Raises
    ------
    ValueError
        Naming each offending module (its qualified name and type) and the first reason.
    """
    from opacus.validators import ModuleValidator

    # Opacus also rejects a module in eval mode; that is no property of the architecture.
    modes = {m: m.training for m in model.modules()}
    model.train()
    try:
        if not ModuleValidator.validate(model, strict=False):
            return
        offenders = []
        for name, module in model.named_modules():
            errors = ModuleValidator.validate(module, strict=False)
            children = module.children()
            if errors and not any(ModuleValidator.validate(c, strict=False) for c in children):
                reason = str(errors[0]).split(".")[0]
                offenders.append(f"{name or '<root>'} ({type(module).__name__}): {reason}")
    finally:
        for m, training in modes.items():
            m.training = training
    raise ValueError(
        "model is not DP-SGD compatible; replace these modules (LayerNorm / GroupNorm(1, c) "
        "instead of BatchNorm): " + "; ".join(offenders)
    )


def _loss_reduction(loss_fn: nn.Module) -> str:
    reduction = getattr(loss_fn, "reduction", "mean")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"loss_fn reduction must be 'mean' or 'sum', got {reduction!r}")
    return reduction


def dp_train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    state: DPSGDState,
    epochs: int,
    lr: float,
    batch_size: int,
    generator: torch.Generator,
    loss_fn: nn.Module | None = None,
    momentum: float = 0.0,
    ghost: bool = False,
) -> tuple[float, DPSGDState]:
    """Train ``model`` in place with DP-SGD for ``epochs`` epochs, continuing the accountant.

    Parameters
    ----------
    model : nn.Module
        A plain module (no BatchNorm). It is wrapped by Opacus for the call and unwrapped
        afterwards: on return it holds the trained weights, has no Opacus hooks or
        per-sample attributes, and its ``.grad`` fields are cleared.
    x, y : torch.Tensor
        The client's private examples and labels.
    state : DPSGDState
        σ, C, q and the steps so far; not modified.
    epochs : int
        Epochs of ``ceil(n / batch_size)`` Poisson-sampled steps each.
    lr : float
        SGD learning rate.
    momentum : float
        SGD momentum (post-processing of the noisy gradients: no privacy cost).
    ghost : bool
        Clip with Opacus' ghost clipping (``grad_sample_mode="ghost"``; Li et al., ICLR
        2022): the same per-example norms and clipped sum, without materialising
        per-example gradients of linear layers (about 10x faster for a linear head on
        thousands of features with large batches).
    batch_size : int
        Expected batch size B; with the data size it fixes q.
    generator : torch.Generator
        Seeds the Poisson sampler and the noise (two derived generators). A privacy draw:
        pass an OS-seeded generator (:func:`fedkd.privacy.entropy.torch_generator`).
    loss_fn : nn.Module, optional
        Default ``nn.CrossEntropyLoss()``; its ``reduction`` ("mean" or "sum") is passed to
        Opacus so that clipping and noise scale match.

    Returns
    -------
    mean_loss : float
        Mean training loss over the examples seen (nan if every batch was empty).
    new_state : DPSGDState
        Copy of ``state`` with ``steps`` increased.

    Raises
    ------
    ValueError
        For a BatchNorm-like module, or a ``state.sample_rate`` that does
        not match ``1 / ceil(n / batch_size)`` (the accountant would be told a wrong q).
    """
    from opacus import PrivacyEngine

    _check_dp_train(model, len(x), len(y), state, epochs, batch_size)
    loss_fn = nn.CrossEntropyLoss() if loss_fn is None else loss_fn
    reduction = _loss_reduction(loss_fn)

    sampling_gen = torch.Generator().manual_seed(
        int(torch.randint(0, _SEED_HIGH, (1,), generator=generator))
    )
    noise_gen = torch.Generator().manual_seed(
        int(torch.randint(0, _SEED_HIGH, (1,), generator=generator))
    )
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, generator=sampling_gen)

    with warnings.catch_warnings():
        # Opacus warns at every engine that secure_mode is off; it cannot be on with torch
        # 2.x (no torchcsprng), which docs/privacy.md states once for the whole run.
        warnings.filterwarnings("ignore", message="Secure RNG turned off", category=UserWarning)
        engine = PrivacyEngine(accountant="rdp")  # its accountant is unused (see module doc)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    was_training = model.training
    private = {
        "module": model,
        "optimizer": optimizer,
        "data_loader": loader,
        "noise_multiplier": state.noise_multiplier,
        "max_grad_norm": state.max_grad_norm,
        "poisson_sampling": True,
        "loss_reduction": reduction,
        "noise_generator": noise_gen,
    }
    if ghost:
        dp_model, dp_optimizer, loss_fn, dp_loader = engine.make_private(
            **private, criterion=loss_fn, grad_sample_mode="ghost"
        )
    else:
        dp_model, dp_optimizer, dp_loader = engine.make_private(**private)
    try:
        total_loss, seen, steps = _dp_epochs(
            dp_model, dp_optimizer, dp_loader, loss_fn, reduction, epochs
        )
    finally:
        dp_model.to_standard_module()  # remove hooks and per-sample attributes
        for p in model.parameters():
            p.grad = None
        model.train(was_training)

    new_state = replace(state, steps=state.steps + steps)
    mean_loss = total_loss / seen if seen else float("nan")
    logger.debug("dp_train: %d steps, mean loss %.4f", steps, mean_loss)
    return mean_loss, new_state


def _check_dp_train(
    model: nn.Module, n: int, n_labels: int, state: DPSGDState, epochs: int, batch_size: int
) -> None:
    """Refuse what :func:`dp_train` cannot train or would account wrongly."""
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    if n != n_labels or n == 0:
        raise ValueError(f"need as many labels as examples (> 0), got {n} and {n_labels}")
    refuse_batchnorm(model)
    q = sample_rate_for(n, batch_size)
    if not math.isclose(q, state.sample_rate, rel_tol=1e-12, abs_tol=0.0):
        raise ValueError(
            f"state.sample_rate={state.sample_rate} but n={n}, batch_size={batch_size} "
            f"give q=1/ceil(n/B)={q}: the accountant would be told the wrong sampling rate"
        )


def drop_nonfinite_examples(params: list[nn.Parameter]) -> int:
    """Zero the per-example gradients of examples whose gradient is not finite.

    DP-SGD bounds each example's contribution by clipping it to norm C, but clipping scales
    by C / norm, and a NaN or infinite entry survives that and the noise: the update, and
    every later reply, would show whether that one example was sampled. Weights that a
    server crafts can cause it. Such an example contributes zero instead, which clipping
    allows (its contribution has norm 0 <= C), so the sensitivity, and the accountant, are
    unchanged. Called between backward and the optimizer step, on ``p.grad_sample``.

    Returns
    -------
    int
        How many examples of the batch were zeroed (kept on the device, never reported).
    """
    for p in params:  # gradients accumulated over several backward passes come as a list
        if isinstance(getattr(p, "grad_sample", None), list):
            p.grad_sample = torch.cat(p.grad_sample, dim=0)
    samples = [p.grad_sample for p in params if getattr(p, "grad_sample", None) is not None]
    if not samples or samples[0].shape[0] == 0:
        return 0
    bad = torch.zeros(samples[0].shape[0], dtype=torch.bool)
    for g in samples:
        bad |= ~torch.isfinite(g.reshape(g.shape[0], -1)).all(dim=1)
    for g in samples:
        g[bad] = 0.0
    return int(bad.sum())


def _dp_epochs(
    dp_model: nn.Module,
    dp_optimizer: torch.optim.Optimizer,
    dp_loader: DataLoader,
    loss_fn: nn.Module,
    reduction: str,
    epochs: int,
) -> tuple[float, int, int]:
    """The DP-SGD steps of :func:`dp_train`: (summed loss, examples seen, steps taken)."""
    total_loss, seen, steps = 0.0, 0, 0
    dp_model.train()
    for _ in range(epochs):
        for xb, yb in dp_loader:
            # Empty Poisson batches still step: the noise is added and accounted.
            dp_optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(dp_model(xb), yb)
            with warnings.catch_warnings():
                # Frozen input layers (public features) make torch warn that the full
                # backward hook fires without input gradients; that is expected here.
                warnings.filterwarnings(
                    "ignore", message="Full backward hook is firing", category=UserWarning
                )
                loss.backward()
            drop_nonfinite_examples(dp_optimizer.params)
            dp_optimizer.step()
            steps += 1
            if len(xb):
                total_loss += loss.item() * (len(xb) if reduction == "mean" else 1)
                seen += len(xb)
    return total_loss, seen, steps


def epsilon_of(state: DPSGDState, delta: float, relation: str = "replace_one") -> float:
    """ε spent so far by the enforced accountant (PLD) from ``state``, under ``relation``
    (fedkd's paths: replace-one; ``"add_remove"`` only for comparisons with published
    figures)."""
    from fedkd.privacy.accounting import epsilon

    if state.steps == 0:
        return 0.0
    release = release_for_round("client", 0, state.steps, state, 1, relation=relation)
    return epsilon([release], delta)


def release_for_round(
    client_id: str,
    round: int,
    steps: int,
    state: DPSGDState,
    population: int,
    seeded: bool = False,
    relation: str = "replace_one",
) -> Release:
    """The ledger entry for the DP-SGD steps one client took in one round.

    Parameters
    ----------
    client_id : str
        Subject of the example-level guarantee (e.g. ``"client-3"``).
    round : int
        Server round.
    steps : int
        Steps taken this round (``new_state.steps - old_state.steps``).
    state : DPSGDState
        Supplies σ and q.
    population : int
        The client's number of private examples N.
    seeded : bool
        Noise derived from ``seed`` (``privacy.insecure_seeded_noise``): not a guarantee.
    relation : str
        Neighbouring relation: ``"replace_one"`` (every fedkd path) or ``"add_remove"``.
    """
    return Release(
        mechanism="dpsgd",
        scope="example",
        subject=client_id,
        round=round,
        noise_multiplier=float(state.noise_multiplier),
        sample_rate=float(state.sample_rate),
        steps=int(steps),
        population=int(population),
        seeded=bool(seeded),
        relation=relation,
    )
