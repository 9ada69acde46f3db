"""Client side of example-level DP: one DP-SGD revisit per round, one accountant per run.

The noise multiplier is fixed at the client's first round, either as configured or
calibrated once for every step the whole run plans (``rounds × local_epochs ×
ceil(n / batch)``), so that the final ε meets ``target_epsilon``. The accountant's history
travels with the client state; ε is cumulative over the run and never reset.

The client trains only when both sides allow it: the server, which charged this round's
planned steps to its ledger when it sent the message (``server_steps``; 0 means it charged
nothing and the client must not train), and the client's own accountant, which freezes at
the smaller of ``privacy.max_epsilon`` and the device's floor. A frozen client keeps
answering from its model: its predictions on public data are post-processing of what was
already accounted for.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from fedkd import protocol as proto
from fedkd.clientdata import ClientData
from fedkd.config import Config, ConfigError
from fedkd.privacy import entropy
from fedkd.privacy.accounting import epsilon, noise_for_target_epsilon
from fedkd.privacy.dpsgd import (
    DPSGDState,
    dp_train,
    epsilon_of,
    refuse_batchnorm,
    release_for_round,
    sample_rate_for,
)
from fedkd.privacy.ledger import Release

logger = logging.getLogger(__name__)

_NOISE = 0x4E  # purpose tag of the DP-SGD draws (insecure_seeded_noise only)


def steps_per_round(cfg: Config, num_examples: int) -> int:
    """DP-SGD steps one client takes in one round."""
    return cfg.clients.local_epochs * math.ceil(num_examples / cfg.clients.batch_size)


def planned_steps(cfg: Config, num_examples: int) -> int:
    """DP-SGD steps the whole run plans for one client (every round, every epoch)."""
    return cfg.rounds * steps_per_round(cfg, num_examples)


def initial_state(cfg: Config, num_examples: int) -> DPSGDState:
    """σ, C and q for a client, calibrated once for the whole run."""
    s = cfg.privacy.dpsgd
    q = sample_rate_for(num_examples, cfg.clients.batch_size)
    if s.noise_multiplier is not None:
        sigma = float(s.noise_multiplier)
    else:
        sigma = noise_for_target_epsilon(
            s.target_epsilon, cfg.privacy.delta, q, planned_steps(cfg, num_examples)
        )
    return DPSGDState(noise_multiplier=sigma, max_grad_norm=s.max_grad_norm, sample_rate=q)


def dpsgd_release(
    subject: str, server_round: int, steps: int, state: DPSGDState, population: int, cfg: Config
) -> Release:
    """The ledger entry for ``steps`` DP-SGD steps of one client (replace-one)."""
    seeded = cfg.privacy.insecure_seeded_noise
    return release_for_round(subject, server_round, steps, state, population, seeded)


def planned_epsilon(cfg: Config, num_examples: int) -> tuple[float, float]:
    """σ of a client and the ε its whole planned run would reach (for the device floor)."""
    state = initial_state(cfg, num_examples)
    steps = planned_steps(cfg, num_examples)
    if steps == 0:
        return state.noise_multiplier, 0.0
    release = dpsgd_release("client", 0, steps, state, num_examples, cfg)
    return state.noise_multiplier, epsilon([release], cfg.privacy.delta)


@dataclass(frozen=True)
class RevisitLimits:
    """What bounds one round's DP-SGD: the server's charge and the budgets."""

    server_steps: int | None  # steps the server charged for this round (None: not sent)
    budget: float | None  # the smaller of privacy.max_epsilon and the device's floor


def _frozen(cfg: Config, dp: DPSGDState, this_round: int, n: int, limits: RevisitLimits) -> bool:
    if limits.server_steps is None:
        raise ConfigError(
            "the train message says nothing of the DP-SGD steps the server charged "
            "(dpsgd-planned-steps); refusing to train unaccounted steps"
        )
    if limits.server_steps == 0:
        return True  # the server charged nothing: training would be unaccounted
    if limits.server_steps != this_round:
        raise ConfigError(
            f"the server charged {limits.server_steps} DP-SGD steps for this round but this "
            f"client's plan is {this_round}; refusing to train unaccounted steps"
        )
    if limits.budget is None:
        return False
    after = dpsgd_release("client", 0, dp.steps + this_round, dp, n, cfg)
    return epsilon([after], cfg.privacy.delta) > limits.budget


def private_revisit(
    cfg: Config,
    model: nn.Module,
    data: ClientData,
    client_id: int,
    server_round: int,
    state: dict[str, Any] | None,
    limits: RevisitLimits,
) -> tuple[float, dict[str, Any], dict[str, float]]:
    """DP-SGD on the client's private data for one round.

    Returns the mean loss, the new DP-SGD state (as a dict, for the client state) and the
    metrics the reply carries: ε so far by the client's own accountant, steps this round and
    in total, σ, q and N, which the server reconciles with the charges in its ledger.
    """
    n = len(data.y_private)
    refuse_batchnorm(model)
    dp = DPSGDState.from_dict(state) if state else initial_state(cfg, n)
    this_round = steps_per_round(cfg, n)
    frozen = _frozen(cfg, dp, this_round, n, limits)
    loss = float("nan")
    before = dp.steps
    if frozen:
        logger.info("client %d: DP-SGD budget reached; answering from its frozen model", client_id)
    elif this_round > 0:
        insecure = (cfg.seed, server_round, client_id, _NOISE)
        generator = entropy.torch_generator(insecure if cfg.privacy.insecure_seeded_noise else None)
        x = torch.from_numpy(np.ascontiguousarray(data.x_private))
        y = torch.from_numpy(np.ascontiguousarray(data.y_private))
        loss, dp = dp_train(
            model,
            x,
            y,
            state=dp,
            epochs=cfg.clients.local_epochs,
            lr=cfg.clients.lr,
            batch_size=cfg.clients.batch_size,
            generator=generator,
            momentum=0.9,  # as the non-private loop; post-processing, no privacy cost
        )
    metrics = {
        proto.DPSGD_EPSILON: epsilon_of(dp, cfg.privacy.delta),
        proto.DPSGD_STEPS_ROUND: float(dp.steps - before),
        proto.DPSGD_STEPS_TOTAL: float(dp.steps),
        proto.DPSGD_NOISE: float(dp.noise_multiplier),
        proto.DPSGD_SAMPLE_RATE: float(dp.sample_rate),
        proto.DPSGD_POPULATION: float(n),
        proto.DPSGD_FROZEN: float(frozen),
    }
    return loss, dp.to_dict(), metrics
