"""Client side of example-level DP: one DP-SGD revisit per round, one accountant per run.

The noise multiplier is fixed at the client's first round, either as configured or
calibrated once for every step the whole run plans (``rounds × local_epochs ×
ceil(n / batch)``), so that the final ε meets ``target_epsilon``. The accountant's history
travels with the client state; ε is cumulative over the run and never reset.

A client whose next round would exceed ``privacy.max_epsilon`` stops training on private
data and keeps answering from its frozen model: its predictions on public data are
post-processing of what was already accounted for, and cost nothing more.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch
from torch import nn

from fedkd.clientdata import ClientData
from fedkd.config import Config
from fedkd.privacy.accounting import epsilon, noise_for_target_epsilon
from fedkd.privacy.dpsgd import DPSGDState, dp_train, epsilon_of, refuse_batchnorm, sample_rate_for
from fedkd.privacy.ledger import Release

logger = logging.getLogger(__name__)


def planned_steps(cfg: Config, num_examples: int) -> int:
    """DP-SGD steps the whole run plans for one client (every round, every epoch)."""
    per_epoch = math.ceil(num_examples / cfg.clients.batch_size)
    return cfg.rounds * cfg.clients.local_epochs * per_epoch


def initial_state(cfg: Config, num_examples: int) -> DPSGDState:
    """σ, C and q for a client, calibrated once for the whole run."""
    s = cfg.privacy.dpsgd
    q = sample_rate_for(num_examples, cfg.clients.batch_size)
    if s.noise_multiplier is not None:
        sigma = float(s.noise_multiplier)
    else:
        sigma = noise_for_target_epsilon(
            s.target_epsilon, cfg.privacy.delta, q, planned_steps(cfg, num_examples), s.accountant
        )
    return DPSGDState(
        noise_multiplier=sigma,
        max_grad_norm=s.max_grad_norm,
        sample_rate=q,
        accountant=s.accountant,
    )


def _candidate(state: DPSGDState, steps: int, num_examples: int) -> list[Release]:
    return [
        Release(
            mechanism="dpsgd",
            scope="example",
            subject="client",
            round=0,
            noise_multiplier=state.noise_multiplier,
            sample_rate=state.sample_rate,
            steps=steps,
            population=num_examples,
        )
    ]


def private_revisit(
    cfg: Config,
    model: nn.Module,
    data: ClientData,
    client_id: int,
    server_round: int,
    state: dict[str, Any] | None,
    generator: torch.Generator,
) -> tuple[float, dict[str, Any], dict[str, float]]:
    """DP-SGD on the client's private data for one round.

    Returns the mean loss, the new DP-SGD state (as a dict, for the client state) and the
    metrics the reply carries: ε so far, steps this round, σ, q and N, which the server
    copies into the run's ledger.
    """
    n = len(data.y_private)
    refuse_batchnorm(model)
    dp = DPSGDState.from_dict(state) if state else initial_state(cfg, n)
    steps_per_epoch = math.ceil(n / cfg.clients.batch_size)
    this_round = cfg.clients.local_epochs * steps_per_epoch
    frozen = False
    budget = cfg.privacy.max_epsilon
    if budget is not None:
        after = epsilon(_candidate(dp, dp.steps + this_round, n), cfg.privacy.delta, dp.accountant)
        frozen = after > budget
    loss = float("nan")
    before = dp.steps
    if frozen:
        logger.info("client %d: DP-SGD budget reached; answering from its frozen model", client_id)
    elif this_round > 0:
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
        "dpsgd-epsilon": epsilon_of(dp, cfg.privacy.delta),
        "dpsgd-steps": float(dp.steps - before),
        "dpsgd-noise": float(dp.noise_multiplier),
        "dpsgd-sample-rate": float(dp.sample_rate),
        "dpsgd-population": float(n),
        "dpsgd-frozen": float(frozen),
    }
    return loss, dp.to_dict(), metrics
