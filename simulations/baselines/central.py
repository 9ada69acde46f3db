"""Centralised baselines: all private partitions pooled, the student architecture trained.

The student architecture includes its fixed public features (``distill.feature_map``,
``distill.public_features``), so ``central-dpsgd`` with a scattering student is the
ScatterNet + linear model of Tramèr & Boneh (2021) under the same DP-SGD.

``central`` is non-private SGD (momentum 0.9, the optimizer of every fedkd loop);
``central-dpsgd`` is Opacus DP-SGD through :func:`fedkd.privacy.dpsgd.dp_train` (Poisson
sampling, SGD with momentum 0.9 as the DP-SGD of fedkd's clients and of Tramèr & Boneh
2021, ghost clipping) with one accountant for the whole run, σ calibrated once for all
planned steps (:func:`fedkd.privacy.accounting.noise_for_target_epsilon`) unless
``privacy.dpsgd.noise_multiplier`` is given. One "round" is one epoch over the pooled
data, so ``rounds`` sets the training length. Nothing is sent: bytes are 0.

The neighbouring relation is ``privacy.dpsgd.relation``: replace-one (fedkd's own, the
default) or add/remove-one, which published DP-SGD figures use and which needs about
half the noise for the same ε. The summary names it in ``relation`` and ``accountant``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fedkd.simulations.baselines.common import (
    BaselineData,
    Recorder,
    central_student,
    generator,
    load_data,
    open_run,
)

from fedkd.config import Config, ConfigError
from fedkd.distill import evaluate, make_optimizer, train_supervised
from fedkd.validation import val_metrics

logger = logging.getLogger(__name__)


def run_central(cfg: Config, out: str | Path) -> dict[str, Any]:
    """Train the student on the pooled private data without privacy.

    Parameters
    ----------
    cfg : Config
        Uses ``data``, ``seed``, ``rounds`` (epochs), ``distill.student``, ``clients.lr``
        and ``clients.batch_size``.
    out : str or Path
        A fresh run directory.

    Returns
    -------
    dict
        The summary written to ``DONE``.
    """
    model, data = central_student(cfg, load_data(cfg))
    rec = open_run(cfg, out, "central")
    fit_central(
        cfg,
        model,
        data.x_private,
        data.y_private,
        data.x_test,
        data.y_test,
        _with_val(rec, model, data),
    )
    return rec.finish()


def _with_val(
    rec: Recorder, model: torch.nn.Module, data: BaselineData
) -> Callable[[dict[str, Any]], None]:
    """``rec.add`` of an epoch's row, with the validation metrics when a split exists."""

    def add(row: dict[str, Any]) -> None:
        val = val_metrics(lambda x, y: evaluate(model, x, y), data.x_val, data.y_val)
        rec.add({**row, **val})

    return add


def fit_central(
    cfg: Config,
    model: torch.nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    x_eval: np.ndarray,
    y_eval: np.ndarray,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> float:
    """Train ``model`` on ``(x, y)`` without privacy for ``cfg.rounds`` epochs (SGD with
    momentum 0.9, ``clients.lr``, ``clients.batch_size``, shuffled by ``seed``); evaluate on
    ``(x_eval, y_eval)`` after each epoch and return the last accuracy."""
    opt = make_optimizer(model, cfg.clients.lr)
    gen = generator(cfg.seed, 11)
    acc = float("nan")
    for epoch in range(1, cfg.rounds + 1):
        train_supervised(
            model, opt, x, y, epochs=1, batch_size=cfg.clients.batch_size, generator=gen
        )
        loss, acc = evaluate(model, x_eval, y_eval)
        if on_epoch is not None:
            on_epoch({"round": epoch, "student_accuracy": acc, "student_loss": loss})
    return acc


MOMENTUM = 0.9  # as fedkd's client DP-SGD and Tramèr & Boneh (ICLR 2021); no privacy cost


def dpsgd_noise(cfg: Config, num_examples: int, steps: int) -> float:
    """σ of a DP-SGD run: the configured one, or calibrated to ``target_epsilon`` under
    ``privacy.dpsgd.relation``."""
    from fedkd.privacy.accounting import noise_for_target_epsilon
    from fedkd.privacy.dpsgd import sample_rate_for

    s = cfg.privacy.dpsgd
    if s.noise_multiplier is not None:
        return float(s.noise_multiplier)
    if s.target_epsilon is None:
        raise ConfigError(
            "central-dpsgd needs privacy.dpsgd.target_epsilon or privacy.dpsgd.noise_multiplier"
        )
    q = sample_rate_for(num_examples, cfg.clients.batch_size)
    return noise_for_target_epsilon(s.target_epsilon, cfg.privacy.delta, q, steps, s.relation)


@dataclass(frozen=True)
class DPSGDResult:
    """What :func:`fit_dpsgd` trained: σ, the final accountant state, ε and the last
    evaluation."""

    noise_multiplier: float
    steps: int
    epsilon: float
    loss: float
    accuracy: float


def fit_dpsgd(
    cfg: Config,
    model: torch.nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    x_eval: np.ndarray,
    y_eval: np.ndarray,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> DPSGDResult:
    """Train ``model`` on ``(x, y)`` with DP-SGD for ``cfg.rounds`` epochs.

    Parameters
    ----------
    cfg : Config
        ``rounds`` (epochs), ``clients.lr``, ``clients.batch_size``, ``seed``,
        ``privacy.delta`` and ``privacy.dpsgd.*`` (σ or target ε, ``max_grad_norm``,
        ``relation``).
    model : torch.nn.Module
        The trainable model (e.g. the head from :func:`central_student`).
    x, y : np.ndarray
        The private training examples (one guarantee for each of them).
    x_eval, y_eval : np.ndarray
        Evaluated after every epoch (the test set, or a validation split when tuning).
    on_epoch : callable, optional
        Called with each epoch's row (``round``, ``student_accuracy``, ``student_loss``,
        ``epsilon_example``, ``delta_example``).

    Returns
    -------
    DPSGDResult
        σ, steps, ε spent under ``privacy.dpsgd.relation``, and the last evaluation.

    Raises
    ------
    ConfigError
        For a δ not below 1/n or a missing ε / σ.
    """
    from fedkd.privacy.accounting import check_delta
    from fedkd.privacy.dpsgd import DPSGDState, dp_train, epsilon_of, sample_rate_for
    from fedkd.privacy.entropy import torch_generator

    n, batch, s = len(y), cfg.clients.batch_size, cfg.privacy.dpsgd
    try:
        check_delta(cfg.privacy.delta, n)
    except ValueError as err:
        raise ConfigError(f"privacy.delta: {err}") from err
    steps = cfg.rounds * math.ceil(n / batch)
    sigma = dpsgd_noise(cfg, n, steps)
    state = DPSGDState(sigma, s.max_grad_norm, sample_rate_for(n, batch))
    logger.info(
        "central-dpsgd: n=%d, B=%d, %d steps, sigma=%.4f (%s)", n, batch, steps, sigma, s.relation
    )
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    # A privacy draw: OS-seeded (derived from seed only under privacy.insecure_seeded_noise).
    insecure = (cfg.seed, 12) if cfg.privacy.insecure_seeded_noise else None
    gen = torch_generator(insecure)
    loss, acc, eps = float("nan"), float("nan"), 0.0
    for epoch in range(1, cfg.rounds + 1):
        model.train()  # Opacus validates a model in training mode
        _, state = dp_train(
            model, xt, yt, state=state, epochs=1, lr=cfg.clients.lr, batch_size=batch,
            generator=gen, momentum=MOMENTUM, ghost=True,
        )  # fmt: skip
        loss, acc = evaluate(model, x_eval, y_eval)
        if on_epoch is None and epoch < cfg.rounds:
            continue  # ε only when reported: a PLD composition costs more than an epoch
        eps = epsilon_of(state, cfg.privacy.delta, s.relation)
        if on_epoch is not None:
            on_epoch(
                {
                    "round": epoch,
                    "student_accuracy": acc,
                    "student_loss": loss,
                    "epsilon_example": eps,
                    "delta_example": cfg.privacy.delta,
                }
            )
    return DPSGDResult(sigma, state.steps, eps, loss, acc)


def run_central_dpsgd(cfg: Config, out: str | Path) -> dict[str, Any]:
    """Train the student on the pooled private data with Opacus DP-SGD (example-level DP).

    Parameters
    ----------
    cfg : Config
        As :func:`run_central`, plus ``privacy.delta`` and ``privacy.dpsgd.*``
        (``target_epsilon`` or ``noise_multiplier``, ``max_grad_norm``, ``relation``).
    out : str or Path
        A fresh run directory.

    Returns
    -------
    dict
        The summary, with ``epsilon_example`` and ``delta_example`` (accountant and
        neighbouring relation in ``accountant`` and ``relation``; σ in
        ``noise_multiplier``).
    """
    from fedkd.privacy.accounting import check_delta

    data = load_data(cfg)
    try:
        check_delta(cfg.privacy.delta, len(data.y_private))
    except ValueError as err:
        raise ConfigError(f"privacy.delta: {err}") from err
    model, data = central_student(cfg, data)
    rec = open_run(cfg, out, "central-dpsgd")
    on_epoch = _with_val(rec, model, data)
    result = fit_dpsgd(
        cfg, model, data.x_private, data.y_private, data.x_test, data.y_test, on_epoch
    )
    relation = cfg.privacy.dpsgd.relation
    return rec.finish(
        {
            "noise_multiplier": result.noise_multiplier,
            "relation": relation,
            "accountant": f"pld ({relation.replace('_', '-')})",
        }
    )
