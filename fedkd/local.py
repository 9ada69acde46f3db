"""One client round: digest the previous teacher, revisit private data, predict the proxy.

With ``clients.joint_distill`` > 0 the revisit keeps distilling the rows the client was
sent while it trains on private data (:func:`fedkd.distill.train_joint`).

Under ``distill.warm_start`` a client of the student's architecture first loads the
student's weights (fedkd/warmstart.py).

Pure with respect to Flower: takes arrays and state, returns arrays and state. The
ClientApp handler in ``client/`` only unpacks the message and packs the reply.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np
import torch

from fedkd import protocol as proto
from fedkd.clientdata import ClientData
from fedkd.clientstate import ClientState
from fedkd.config import Config
from fedkd.distill import (
    evaluate,
    make_optimizer,
    predict_probs,
    train_distill,
    train_joint,
    train_supervised,
)
from fedkd.features import build_client_model, feature_args, on_features
from fedkd.protocol import derive_seed
from fedkd.warmstart import load_head, warm_starts

logger = logging.getLogger(__name__)

_INIT, _DIGEST, _REVISIT = 1, 2, 3


@dataclass(frozen=True)
class RoundTask:
    """What the server asks of a client in one round."""

    server_round: int
    proxy_idx: np.ndarray  # (M,) rows of the public proxy set to predict
    teacher_idx: np.ndarray | None = None  # (M',) rows the previous teacher labelled
    teacher_probs: np.ndarray | None = None  # (M', C) previous teacher labels
    dpsgd_steps: int | None = None  # DP-SGD steps the server charged for this round
    student_weights: dict[str, np.ndarray] | None = None  # distill.warm_start: start from these


@dataclass(frozen=True)
class RoundResult:
    """What a client computed in one round."""

    probs: np.ndarray  # (M, C) soft predictions on task.proxy_idx
    metrics: dict[str, float]
    state: ClientState


def _on_features(model: torch.nn.Module, data: ClientData) -> tuple[torch.nn.Module, ClientData]:
    """Train and predict with the head on cached features when the model has a fixed
    public feature map; the head shares its parameters with ``model``."""
    net, (x_private, x_proxy) = on_features(model, data.x_private, data.x_proxy)
    if net is model:
        return model, data
    return net, replace(
        data, x_private=x_private, x_proxy=x_proxy, input_shape=tuple(x_proxy.shape[1:])
    )


def client_model_name(cfg: Config, client_id: int) -> str:
    """Architecture of client ``client_id``: ``clients.models`` is cycled over clients."""
    return cfg.clients.models[client_id % len(cfg.clients.models)]


@dataclass(frozen=True)
class RevisitStep:
    """One revisit of the private data, as a mechanism's ``revisit`` hook receives it."""

    net: torch.nn.Module  # the model to train (its head when on cached features)
    optimizer: torch.optim.Optimizer
    data: ClientData
    client_id: int
    task: RoundTask
    state: object  # the mechanism's client state from the last round (None at first)
    device_budget: float | None  # the device's own ε cap (its privacy floor)


def local_round(
    cfg: Config,
    data: ClientData,
    client_id: int,
    task: RoundTask,
    state: ClientState | None,
    device_budget: float | None = None,
) -> RoundResult:
    """Run digest -> revisit -> predict for one client and return predictions and state.

    Parameters
    ----------
    cfg : Config
        The run configuration (sent by the server).
    data : ClientData
        The client's private data and the public proxy inputs.
    client_id : int
        Stable id of the client (its partition id in simulation).
    task : RoundTask
        The round, the proxy rows to predict and the previous teacher labels.
    state : ClientState or None
        State from the client's last round, or None on its first round.
    device_budget : float, optional
        The device's own DP-SGD ε cap (its privacy floor); the client freezes at the smaller
        of it and ``privacy.max_epsilon``.
    """
    model, optimizer = _restored_model(cfg, data, client_id, state)
    net, data = _on_features(model, data)
    name = client_model_name(cfg, client_id)
    if task.student_weights is not None and warm_starts(cfg, name):
        load_head(net, task.student_weights, name)  # the student's weights, a fresh optimizer
        optimizer = make_optimizer(model, cfg.clients.lr)
    digest_loss = _digest(cfg, net, optimizer, data, client_id, task)
    held = state.dpsgd if state is not None else None
    step = RevisitStep(net, optimizer, data, client_id, task, held, device_budget)
    train_loss, mech_state, extra = _revisit(cfg, step)
    probs = predict_probs(net, data.x_proxy[task.proxy_idx])  # (M, C)
    metrics = {
        proto.NUM_EXAMPLES: float(len(data.y_private)),
        proto.DIGEST_LOSS: float(digest_loss),  # public data only
        **extra,
    }
    if not cfg.privacy.mechanisms:
        # Statistics of the private data itself: not post-processing of a DP release, so
        # they are sent only by non-private runs.
        _, local_acc = evaluate(net, data.x_private, data.y_private)
        metrics[proto.TRAIN_LOSS] = float(train_loss)
        metrics[proto.LOCAL_ACCURACY] = float(local_acc)
    new_state = ClientState(
        round=task.server_round,
        model={k: v.detach().clone() for k, v in model.state_dict().items()},
        optimizer=optimizer.state_dict(),
        dpsgd=mech_state,
    )
    return RoundResult(probs=probs, metrics=metrics, state=new_state)


def _restored_model(
    cfg: Config, data: ClientData, client_id: int, state: ClientState | None
) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """The client's model and optimizer, with last round's weights when there are any."""
    model = build_client_model(
        client_model_name(cfg, client_id),
        data.input_shape,
        data.num_classes,
        seed=derive_seed(cfg.seed, client_id, _INIT),
        x_public=data.x_proxy,
        **feature_args(cfg.clients, "clients"),
    )
    optimizer = make_optimizer(model, cfg.clients.lr)
    if state is not None and state.model:  # an empty model: fresh weights, kept accountant
        model.load_state_dict(state.model)
        if state.optimizer is not None:
            optimizer.load_state_dict(state.optimizer)
    return model, optimizer


def _digest(
    cfg: Config,
    net: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    data: ClientData,
    client_id: int,
    task: RoundTask,
) -> float:
    """Distil the previous teacher on public data (no private data, no privacy cost)."""
    if task.teacher_idx is None or cfg.clients.digest_epochs <= 0:
        return 0.0
    seed = derive_seed(cfg.seed, task.server_round, client_id, _DIGEST)
    return train_distill(
        net,
        optimizer,
        data.x_proxy[task.teacher_idx],
        task.teacher_probs,
        epochs=cfg.clients.digest_epochs,
        batch_size=cfg.clients.batch_size,
        temperature=cfg.distill.temperature,
        generator=torch.Generator().manual_seed(seed),
    )


def _revisit(cfg: Config, step: RevisitStep) -> tuple[float, object, dict[str, float]]:
    """Train on the private data: a mechanism's own way (DP-SGD) or plain supervised."""
    from fedkd.mechanisms.client import revisit

    private = revisit(cfg, step)
    if private is not None:
        return private
    seed = derive_seed(cfg.seed, step.task.server_round, step.client_id, _REVISIT)
    generator = torch.Generator().manual_seed(seed)
    c, task, data = cfg.clients, step.task, step.data
    if c.joint_distill > 0 and task.teacher_idx is not None and len(task.teacher_idx):
        loss = train_joint(
            step.net,
            step.optimizer,
            data.x_private,
            data.y_private,
            data.x_proxy[task.teacher_idx],
            task.teacher_probs,
            weight=c.joint_distill,
            epochs=c.local_epochs,
            batch_size=c.batch_size,
            temperature=cfg.distill.temperature,
            generator=generator,
        )
        return loss, step.state, {}
    loss = train_supervised(
        step.net,
        step.optimizer,
        data.x_private,
        data.y_private,
        epochs=c.local_epochs,
        batch_size=c.batch_size,
        generator=generator,
    )
    return loss, step.state, {}
