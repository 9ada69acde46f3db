"""The fedkd ClientApp (Flower Message API).

Handlers stay thin: unpack the message, call :func:`fedkd.local.local_round`, encode the
predictions, reply. Only encoded predictions and metrics leave the client.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp

from fedkd import attacks
from fedkd import protocol as proto
from fedkd.clientdata import ClientData, client_data
from fedkd.clientstate import ClientState, StateDir
from fedkd.compress import get_codec
from fedkd.config import Config, ConfigError, from_dict
from fedkd.data import DataError
from fedkd.local import RoundTask, local_round
from fedkd.models import ModelError

logger = logging.getLogger(__name__)

app = ClientApp()

_STATE_KEY = "fedkd-client"
USER_ERROR = 100  # Error code of replies caused by a node's data or config, not a crash
SIMULATED_DROPOUT = 101  # Error code of a simulated dropout (faults.dropout)


def codec_for(cfg: Config):
    """The uplink codec: PATE always sends one-hot votes."""
    if "pate" in cfg.privacy.mechanisms:
        return get_codec("onebit")
    if cfg.distill.codec == "topk":
        return get_codec("topk", k=cfg.distill.topk)
    return get_codec(cfg.distill.codec)


def _client_id(context: Context) -> int:
    """The node's stable client id: ``partition-id`` (simulation) or ``client-id`` (device)."""
    node_config = context.node_config
    for key in ("partition-id", "client-id"):
        if key in node_config:
            try:
                return int(node_config[key])
            except (TypeError, ValueError) as err:
                raise ConfigError(f"node config {key} must be an integer") from err
    raise ConfigError("node config must set client-id (or partition-id in simulation)")


def _data(cfg: Config, context: Context) -> tuple[int, ClientData]:
    cid = _client_id(context)
    if "data-path" in context.node_config:
        from fedkd.data.device import device_data  # deployment: the device's own files

        return cid, device_data(cfg, context.node_config)
    return cid, client_data(cfg.data, cfg.seed, cfg.clients.num_clients, cid)


def _state_dir(
    cfg: Config, msg_config: ConfigRecord, context: Context, cid: int
) -> StateDir | None:
    """Where this client keeps its state on disk.

    A device (``data-path`` in its node config) uses only its own ``state-dir``; the folder
    the server names is for simulated clients, which share the server's disk.
    """
    device = "data-path" in context.node_config
    root = context.node_config.get("state-dir") or (
        None if device else msg_config.get(proto.STATE_DIR)
    )
    if device and root is None and "dpsgd" in cfg.privacy.mechanisms:
        raise ConfigError(
            "node config sets no state-dir: with dpsgd the accountant must survive restarts"
        )
    return StateDir(Path(str(root)) / f"client-{cid}") if root else None


def _restore(context: Context, store: StateDir | None, server_round: int) -> ClientState | None:
    if _STATE_KEY in context.state:
        state = ClientState.from_bytes(context.state[_STATE_KEY]["blob"])
        if state.round < server_round:
            return state
    return store.load_before(server_round) if store is not None else None


def _task(msg: Message) -> RoundTask:
    content = msg.content
    teacher_idx = teacher_probs = None
    if proto.TEACHER in content:
        teacher_idx = content[proto.TEACHER]["idx"].numpy().astype(np.int64)
        teacher_probs = content[proto.TEACHER]["probs"].numpy().astype(np.float32)
    return RoundTask(
        server_round=int(content[proto.CONFIG][proto.ROUND]),
        proxy_idx=content[proto.PROXY]["idx"].numpy().astype(np.int64),
        teacher_idx=teacher_idx,
        teacher_probs=teacher_probs,
    )


def _user_error(msg: Message, context: Context, err: Exception) -> Message:
    ids = context.node_config
    who = ids.get("partition-id", ids.get("client-id", context.node_id))
    reason = f"node {who}: {err}"
    logger.error(reason)
    return Message(Error(code=USER_ERROR, reason=reason), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """One fedkd round on this client."""
    torch.set_num_threads(1)
    try:
        cfg = from_dict(json.loads(str(msg.content[proto.CONFIG][proto.RUN_CONFIG])))
        task = _task(msg)
        cid = _client_id(context)
        if attacks.drops_out(cfg.seed, task.server_round, cid, cfg.faults.dropout):
            return Message(
                Error(code=SIMULATED_DROPOUT, reason=f"node {cid}: simulated dropout"), reply_to=msg
            )
        cid, data = _data(cfg, context)
        store = _state_dir(cfg, msg.content[proto.CONFIG], context, cid)
        result = local_round(cfg, data, cid, task, _restore(context, store, task.server_round))
    except (ConfigError, DataError, ModelError) as err:
        return _user_error(msg, context, err)
    blob = result.state.to_bytes()
    context.state[_STATE_KEY] = ConfigRecord({"blob": blob})
    if store is not None:
        store.save(result.state)
    probs = result.probs
    f = cfg.faults
    if f.adversarial_fraction > 0 and cid in attacks.adversaries(
        cfg.clients.num_clients, f.adversarial_fraction, cfg.seed
    ):
        rng = attacks.attack_rng(cfg.seed, task.server_round, cid)
        probs = attacks.attack(probs, f.attack, rng, f.attack_scale)
    encoded = codec_for(cfg).encode(probs)
    metrics = {proto.CLIENT_ID: cid, **result.metrics}
    return Message(
        RecordDict(
            {
                proto.PREDICTIONS: ArrayRecord({k: Array(v) for k, v in encoded.items()}),
                proto.METRICS: MetricRecord(metrics),
            }
        ),
        reply_to=msg,
    )


@app.query("info")
def info(msg: Message, context: Context) -> Message:
    """Handshake: the client's stable id and data size (no data, no predictions)."""
    torch.set_num_threads(1)
    try:
        cfg = from_dict(json.loads(str(msg.content[proto.CONFIG][proto.RUN_CONFIG])))
        cid, data = _data(cfg, context)
    except (ConfigError, DataError, ModelError) as err:
        return _user_error(msg, context, err)
    metrics = {proto.CLIENT_ID: cid, proto.NUM_EXAMPLES: len(data.y_private)}
    return Message(RecordDict({proto.METRICS: MetricRecord(metrics)}), reply_to=msg)
