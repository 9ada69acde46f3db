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
from fedkd.config import Config, ConfigError, from_dict
from fedkd.data import DataError
from fedkd.local import RoundTask, local_round
from fedkd.mechanisms.client import device_accountants, device_request, encode_reply
from fedkd.models import ModelError
from fedkd.privacy.policy import PolicyError, check_request, device_policy

logger = logging.getLogger(__name__)

app = ClientApp()

_STATE_KEY = "fedkd-client"
USER_ERROR = 100  # Error code of replies caused by a node's data or config, not a crash
SIMULATED_DROPOUT = 101  # Error code of a simulated dropout (faults.dropout)
SIMULATED_LOSS = 102  # Error code standing for a reply lost after training (faults.lose_replies)
POLICY_REFUSAL = 103  # Error code of a request refused by the device's privacy floor
CLIENT_FAILURE = 104  # Error code of any other failure (its text stays on the device)
_DATA_ERROR_REPLY = "its local data failed validation (details in the device's own log)"


def _client_id(context: Context) -> int:
    """The node's stable client id: ``partition-id`` (simulation) or ``client-id`` (device)."""
    node_config = context.node_config
    for key in (proto.NODE_PARTITION_ID, proto.NODE_CLIENT_ID):
        if key in node_config:
            try:
                return int(node_config[key])
            except (TypeError, ValueError) as err:
                raise ConfigError(f"node config {key} must be an integer") from err
    raise ConfigError("node config must set client-id (or partition-id in simulation)")


def _data(cfg: Config, context: Context) -> tuple[int, ClientData]:
    cid = _client_id(context)
    if proto.NODE_DATA_PATH in context.node_config:
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
    device = proto.NODE_DATA_PATH in context.node_config
    root = context.node_config.get(proto.NODE_STATE_DIR) or (
        None if device else msg_config.get(proto.STATE_DIR)
    )
    accountants = device_accountants(cfg)
    if device and root is None and accountants:
        raise ConfigError(
            f"node config sets no {proto.NODE_STATE_DIR}: with {', '.join(accountants)} the "
            "accountant must survive restarts"
        )
    return StateDir(Path(str(root)) / f"client-{cid}") if root else None


def _restore(context: Context, store: StateDir | None, server_round: int) -> ClientState | None:
    """The model of the last round before ``server_round`` and the newest DP-SGD count.

    The DP-SGD state is the one with the most steps this device ever held (in memory or on
    disk), whatever round the server names: a replayed or lower round number restores an
    older model but never an older accountant.
    """
    held = []
    if _STATE_KEY in context.state:
        held.append(ClientState.from_bytes(context.state[_STATE_KEY]["blob"]))
    state = next((s for s in held if s.round < server_round), None)
    if state is None and store is not None:
        state = store.load_before(server_round)
    counts = [s.dpsgd for s in held if s.dpsgd]
    saved = store.max_dpsgd() if store is not None else None
    if saved is not None:
        counts.append(saved)
    dpsgd = max(counts, key=lambda d: d["steps"], default=None)
    if dpsgd is None:
        return state
    if state is None:
        return ClientState(round=0, model={}, dpsgd=dpsgd)  # fresh model, accountant kept
    if not state.dpsgd or state.dpsgd["steps"] < dpsgd["steps"]:
        state.dpsgd = dpsgd
    return state


def _check_teacher(idx: np.ndarray, probs: np.ndarray) -> None:
    """The server's teacher labels must be probabilities, one row per index.

    A client digests them before it trains; labels that are not probabilities (huge,
    negative, not finite) would let a server steer the client's weights anywhere.
    """
    ok = (
        probs.ndim == 2
        and len(probs) == len(idx)
        and bool(np.isfinite(probs).all())
        and bool((probs >= 0).all())
        and bool(np.allclose(probs.sum(axis=1), 1.0, atol=1e-2))
    )
    if not ok:
        raise ConfigError(
            "the server's teacher labels are not probabilities (finite, >= 0, rows summing "
            "to 1, one row per proxy index)"
        )


def _indices(raw: np.ndarray, record: str) -> np.ndarray:
    """A record's ``idx`` as int64, refused unless it is a 1-D array of integers."""
    if raw.ndim != 1 or not np.issubdtype(raw.dtype, np.integer):
        raise ConfigError(f"the server's {record} indices must be a 1-D array of integers")
    return raw.astype(np.int64)


def _check_rows(task: RoundTask, data: ClientData) -> None:
    """Every index the server sent names a proxy row; teacher labels have C columns."""
    rows = len(data.x_proxy)
    for name, idx in ((proto.PROXY, task.proxy_idx), (proto.TEACHER, task.teacher_idx)):
        if idx is not None and len(idx) and not (idx.min() >= 0 and idx.max() < rows):
            raise ConfigError(
                f"the server's {name} indices must lie in [0, {rows}), the proxy's rows"
            )
    if task.teacher_probs is not None and task.teacher_probs.shape[1] != data.num_classes:
        raise ConfigError(
            f"the server's teacher labels have {task.teacher_probs.shape[1]} classes, "
            f"the data {data.num_classes}"
        )


def _task(msg: Message) -> RoundTask:
    content = msg.content
    teacher_idx = teacher_probs = None
    if proto.TEACHER in content:
        teacher_idx = _indices(content[proto.TEACHER][proto.IDX].numpy(), proto.TEACHER)
        teacher_probs = content[proto.TEACHER][proto.PROBS].numpy().astype(np.float32)
        _check_teacher(teacher_idx, teacher_probs)
    student = None
    if proto.STUDENT in content:
        student = {k: v.numpy() for k, v in content[proto.STUDENT].items()}
    return RoundTask(
        server_round=int(content[proto.CONFIG][proto.ROUND]),
        proxy_idx=_indices(content[proto.PROXY][proto.IDX].numpy(), proto.PROXY),
        teacher_idx=teacher_idx,
        teacher_probs=teacher_probs,
        dpsgd_steps=(
            int(content[proto.CONFIG][proto.DPSGD_STEPS])
            if proto.DPSGD_STEPS in content[proto.CONFIG]
            else None
        ),
        student_weights=student,
    )


def _who(context: Context) -> object:
    ids = context.node_config
    return ids.get(proto.NODE_PARTITION_ID, ids.get(proto.NODE_CLIENT_ID, context.node_id))


def _user_error(msg: Message, context: Context, err: Exception) -> Message:
    """Error reply for a problem the node's operator or the server's config can fix.

    A data error's message can carry facts about the private data (a label, a path, a
    count), so the server only hears that the data failed; the device logs the detail.
    """
    who = _who(context)
    logger.error("node %s: %s", who, err)
    device = proto.NODE_DATA_PATH in context.node_config
    if isinstance(err, DataError):
        detail = _DATA_ERROR_REPLY
    elif isinstance(err, ModelError) and device:  # its text can echo what the device holds
        detail = "its model failed to build (details in the device's own log)"
    else:
        detail = str(err)
    code = POLICY_REFUSAL if isinstance(err, PolicyError) else USER_ERROR
    return Message(Error(code=code, reason=f"node {who}: {detail}"), reply_to=msg)


def _check_model(cfg: Config, context: Context, cid: int) -> None:
    """A device imports no code the server names unless its node config allows it."""
    from fedkd.local import client_model_name

    if proto.NODE_DATA_PATH not in context.node_config:
        return  # simulation: the models are the run's own
    name = client_model_name(cfg, cid)
    allowed = str(context.node_config.get(proto.NODE_ALLOW_MODELS, "")).split(",")
    if ":" in name and name not in [a.strip() for a in allowed]:
        raise PolicyError(
            f"refused by the device: model '{name}' is an import path; list it in the node "
            "config's allow-models to let the server choose it"
        )


def _check_floor(cfg: Config, context: Context, data: ClientData, task: RoundTask):
    """The device's privacy floor against this request (raises PolicyError)."""
    policy = device_policy(context.node_config)
    request = device_request(cfg, len(data.y_private))  # e.g. DP-SGD's σ and planned ε
    check_request(policy, cfg, proxy_rows=len(task.proxy_idx), **request)
    return policy


def _round(msg: Message, context: Context) -> tuple[Config, int, RoundTask, object]:
    """Parse, check against the floor, train; returns what the reply needs."""
    cfg = from_dict(json.loads(str(msg.content[proto.CONFIG][proto.RUN_CONFIG])))
    task = _task(msg)
    cid = _client_id(context)
    _check_model(cfg, context, cid)
    cid, data = _data(cfg, context)
    _check_rows(task, data)
    policy = _check_floor(cfg, context, data, task)
    store = _state_dir(cfg, msg.content[proto.CONFIG], context, cid)
    state = _restore(context, store, task.server_round)
    result = local_round(cfg, data, cid, task, state, device_budget=policy.max_epsilon)
    context.state[_STATE_KEY] = ConfigRecord({"blob": result.state.to_bytes()})
    if store is not None:
        store.save(result.state)  # saved before the reply leaves: ε never goes back
    return cfg, cid, task, result


def _failure(msg: Message, context: Context) -> Message:
    """Error reply for any other failure: the text stays in the device's own log."""
    logger.exception("node %s: the round failed", _who(context))
    reason = f"node {_who(context)}: the round failed (details in the device's own log)"
    return Message(Error(code=CLIENT_FAILURE, reason=reason), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """One fedkd round on this client."""
    torch.set_num_threads(1)
    try:
        cfg = from_dict(json.loads(str(msg.content[proto.CONFIG][proto.RUN_CONFIG])))
        server_round = int(msg.content[proto.CONFIG][proto.ROUND])
        cid = _client_id(context)
        if attacks.drops_out(cfg.seed, server_round, cid, cfg.faults.dropout):
            return Message(
                Error(code=SIMULATED_DROPOUT, reason=f"node {cid}: simulated dropout"), reply_to=msg
            )
        cfg, cid, task, result = _round(msg, context)
    except (ConfigError, DataError, ModelError) as err:
        return _user_error(msg, context, err)
    except Exception:  # noqa: BLE001 - its text may hold facts of the private data
        return _failure(msg, context)
    if attacks.drops_out(cfg.seed, task.server_round, cid, cfg.faults.lose_replies, tag=0x105E):
        # Trained and saved, then the reply never reaches the server.
        return Message(Error(code=SIMULATED_LOSS, reason=f"node {cid}: reply lost"), reply_to=msg)
    probs = result.probs
    f = cfg.faults
    if f.adversarial_fraction > 0 and cid in attacks.adversaries(
        cfg.clients.num_clients, f.adversarial_fraction, cfg.seed
    ):
        rng = attacks.attack_rng(cfg.seed, task.server_round, cid)
        probs = attacks.attack(probs, f.attack, rng, f.attack_scale)
    try:
        encoded = encode_reply(cfg, probs)  # each mechanism's client step, then the codec
    except Exception:  # noqa: BLE001 - e.g. predictions that are not finite
        return _failure(msg, context)
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
