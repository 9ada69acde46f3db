"""Centralised baselines: all private partitions pooled, the student architecture trained.

The student architecture includes its fixed public features (``distill.feature_map``,
``distill.public_features``), so ``central-dpsgd`` with a scattering student is the
ScatterNet + linear model of Tramèr & Boneh (2021) under the same DP-SGD.

``central`` is non-private SGD (momentum 0.9, the optimizer of every fedkd loop);
``central-dpsgd`` is Opacus DP-SGD through :func:`fedkd.privacy.dpsgd.dp_train` with one
accountant for the whole run, σ calibrated once for all planned steps
(:func:`fedkd.privacy.accounting.noise_for_target_epsilon`) unless
``privacy.dpsgd.noise_multiplier`` is given. One "round" is one epoch over the pooled
data, so ``rounds`` sets the training length. Nothing is sent: bytes are 0.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch

from fedkd.config import Config, ConfigError
from fedkd.distill import evaluate, make_optimizer, train_supervised
from fedkd.validation import val_metrics
from simulations.baselines.common import central_student, generator, load_data, open_run

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
    opt = make_optimizer(model, cfg.clients.lr)
    gen = generator(cfg.seed, 11)
    for epoch in range(1, cfg.rounds + 1):
        train_supervised(
            model,
            opt,
            data.x_private,
            data.y_private,
            epochs=1,
            batch_size=cfg.clients.batch_size,
            generator=gen,
        )
        loss, acc = evaluate(model, data.x_test, data.y_test)
        val = val_metrics(lambda x, y: evaluate(model, x, y), data.x_val, data.y_val)
        rec.add({"round": epoch, "student_accuracy": acc, "student_loss": loss, **val})
    return rec.finish()


def dpsgd_noise(cfg: Config, num_examples: int, steps: int) -> float:
    """σ of a DP-SGD run: the configured one, or calibrated to ``target_epsilon``."""
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
    return noise_for_target_epsilon(s.target_epsilon, cfg.privacy.delta, q, steps)


def run_central_dpsgd(cfg: Config, out: str | Path) -> dict[str, Any]:
    """Train the student on the pooled private data with Opacus DP-SGD (example-level DP).

    Parameters
    ----------
    cfg : Config
        As :func:`run_central`, plus ``privacy.delta`` and ``privacy.dpsgd.*``
        (``target_epsilon`` or ``noise_multiplier``, ``max_grad_norm``, ``accountant``).
    out : str or Path
        A fresh run directory.

    Returns
    -------
    dict
        The summary, with ``epsilon_example`` and ``delta_example`` (accountant in
        ``accountant``; σ in ``noise_multiplier``).
    """
    from fedkd.privacy.accounting import check_delta
    from fedkd.privacy.dpsgd import DPSGDState, dp_train, epsilon_of, sample_rate_for

    data = load_data(cfg)
    n, batch = len(data.y_private), cfg.clients.batch_size
    try:
        check_delta(cfg.privacy.delta, n)
    except ValueError as err:
        raise ConfigError(f"privacy.delta: {err}") from err
    model, data = central_student(cfg, data)
    steps = cfg.rounds * math.ceil(n / batch)
    sigma = dpsgd_noise(cfg, n, steps)
    s = cfg.privacy.dpsgd
    state = DPSGDState(
        noise_multiplier=sigma,
        max_grad_norm=s.max_grad_norm,
        sample_rate=sample_rate_for(n, batch),
    )
    logger.info("central-dpsgd: n=%d, B=%d, %d steps, sigma=%.4f", n, batch, steps, sigma)
    rec = open_run(cfg, out, "central-dpsgd")
    x, y = torch.from_numpy(data.x_private), torch.from_numpy(data.y_private)
    from fedkd.privacy.entropy import torch_generator

    # A privacy draw: OS-seeded (derived from seed only under privacy.insecure_seeded_noise).
    insecure = (cfg.seed, 12) if cfg.privacy.insecure_seeded_noise else None
    gen = torch_generator(insecure)
    for epoch in range(1, cfg.rounds + 1):
        model.train()  # Opacus validates a model in training mode
        _, state = dp_train(
            model, x, y, state=state, epochs=1, lr=cfg.clients.lr, batch_size=batch, generator=gen
        )
        loss, acc = evaluate(model, data.x_test, data.y_test)
        rec.add(
            {
                "round": epoch,
                "student_accuracy": acc,
                "student_loss": loss,
                **val_metrics(lambda x, y: evaluate(model, x, y), data.x_val, data.y_val),
                "epsilon_example": epsilon_of(state, cfg.privacy.delta),
                "delta_example": cfg.privacy.delta,
            }
        )
    return rec.finish({"noise_multiplier": sigma, "accountant": "pld (replace-one)"})
