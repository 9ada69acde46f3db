"""FedAvg and DP-FedAvg baselines on Flower's built-in strategies (weights DO travel).

``fedavg`` runs ``flwr.serverapp.strategy.FedAvg`` with the student architecture (with
fixed public features, ``distill.feature_map`` / ``distill.public_features``, only the
trainable head travels: the feature map is public and the same on every node);
``dp-fedavg`` wraps it in ``DifferentialPrivacyServerSideFixedClipping`` with Flower's
``RdpAccountant``. Both run on an in-process Grid (:class:`CountingGrid`) with the small
ClientApp :data:`app` of this module, which trains the received weights on the client's
partition for ``clients.local_epochs`` epochs and sends them back.

Flower 1.42's accounted fixed-clipping wrapper accepts only
``SamplingMethod.NO_AMPLIFICATION`` with ``NeighboringRelation.ADD_OR_REMOVE_ONE``, FedAvg's
own ``aggregate_train`` and equal client weights. So ``dp-fedavg`` samples a fixed number of
clients per round (all, or ``clients.sample_size`` with ``clients.sampling: fixed``), every
client reports ``num-examples = 1``, and ε is accounted *without* sampling amplification
(Poisson client sampling is not available in that combination). Noise: std
``σ · clip_norm / K`` on the mean update, σ = ``privacy.gaussian.noise_multiplier``, clip =
``privacy.gaussian.clip_norm``, δ = ``privacy.client_delta`` (else ``privacy.delta``).
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedkd.baselines.common import (
    CountingGrid,
    generator,
    load_data,
    model_on_features,
    open_run,
)
from fedkd.clientdata import client_data
from fedkd.config import Config, ConfigError, from_dict, to_dict
from fedkd.distill import evaluate, make_optimizer, train_supervised

logger = logging.getLogger(__name__)

RUN_CONFIG = "run-config"
EQUAL_WEIGHTS = "equal-weights"

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the received student weights on this node's partition; reply with them."""
    torch.set_num_threads(1)
    conf = msg.content["config"]
    cfg = from_dict(json.loads(str(conf[RUN_CONFIG])))
    pid = int(context.node_config["partition-id"])
    server_round = int(conf.get("server-round", 0))
    data = client_data(cfg.data, cfg.seed, cfg.clients.num_clients, pid)
    model, (x_private,) = model_on_features(
        cfg,
        cfg.distill.student,
        "distill",
        data.input_shape,
        data.num_classes,
        cfg.seed,
        data.x_private,
    )
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    loss = 0.0
    if len(data.y_private):
        loss = train_supervised(
            model,
            make_optimizer(model, cfg.clients.lr),
            x_private,
            data.y_private,
            epochs=cfg.clients.local_epochs,
            batch_size=cfg.clients.batch_size,
            generator=generator(cfg.seed, 21, pid, server_round),
        )
    weight = 1 if bool(conf.get(EQUAL_WEIGHTS, False)) else max(len(data.y_private), 1)
    content = RecordDict(
        {
            "arrays": ArrayRecord(model.state_dict()),
            "metrics": MetricRecord({"num-examples": weight, "train-loss": float(loss)}),
        }
    )
    return Message(content, reply_to=msg)


def _fraction(cfg: Config, private: bool) -> float:
    c = cfg.clients
    if c.sampling == "all":
        return 1.0
    if c.sampling == "fixed":
        return c.sample_size / c.num_clients
    if private:
        raise ConfigError(
            "dp-fedavg: Flower's accounted DifferentialPrivacyServerSideFixedClipping supports "
            "only no-amplification accounting; set clients.sampling to all or fixed"
        )
    return c.sample_rate  # FedAvg samples round(N * fraction) nodes, not Poisson


def run_fedavg(cfg: Config, out: str | Path, *, private: bool = False) -> dict[str, Any]:
    """Run FedAvg (``private=False``) or DP-FedAvg (``private=True``) into ``out``.

    Parameters
    ----------
    cfg : Config
        Uses ``data``, ``seed``, ``rounds``, ``distill.student``, ``clients.*`` and, for
        DP-FedAvg, ``privacy.gaussian.{noise_multiplier, clip_norm}``,
        ``privacy.client_delta`` / ``privacy.delta`` and ``privacy.max_epsilon``.
    out : str or Path
        A fresh run directory.
    private : bool
        Wrap FedAvg in Flower's server-side fixed-clipping DP strategy with its accountant.

    Returns
    -------
    dict
        The summary written to ``DONE`` (``epsilon_client``/``delta_client`` when private).
    """
    from flwr.serverapp import (
        NeighboringRelation,
        PrivacyConfig,
        RdpAccountant,
        SamplingMethod,
    )
    from flwr.serverapp.exception import PrivacyBudgetExhausted
    from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping, FedAvg

    from fedkd.privacy.checks import client_delta

    torch.set_num_threads(1)
    method = "dp-fedavg" if private else "fedavg"
    data = load_data(cfg)
    n_clients = cfg.clients.num_clients
    fraction = _fraction(cfg, private)
    k = max(int(n_clients * fraction), min(2, n_clients))
    delta = client_delta(cfg)
    if private and delta >= 1.0 / n_clients:
        raise ConfigError(
            f"privacy.client_delta: δ={delta:g} must be below 1/num_clients={1 / n_clients:g}"
        )
    rec = open_run(cfg, out, method)
    model, (x_test,) = model_on_features(
        cfg,
        cfg.distill.student,
        "distill",
        data.input_shape,
        data.num_classes,
        cfg.seed,
        data.x_test,
    )
    strategy: Any = FedAvg(
        fraction_train=fraction,
        fraction_evaluate=0.0,
        min_train_nodes=min(2, n_clients),
        min_available_nodes=n_clients,
    )
    accountant = None
    if private:
        g = cfg.privacy.gaussian
        accountant = RdpAccountant(
            PrivacyConfig(
                target_delta=delta,
                population_size=n_clients,
                neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
                sampling_method=SamplingMethod.NO_AMPLIFICATION,
                max_epsilon=cfg.privacy.max_epsilon,
            )
        )
        strategy = DifferentialPrivacyServerSideFixedClipping(
            strategy, g.noise_multiplier, g.clip_norm, k, accountant=accountant
        )
    grid = CountingGrid(app, n_clients)
    random.seed(cfg.seed)  # Flower's node sampling uses the global `random`
    np.random.seed(cfg.seed % 2**32)  # noqa: NPY002 - Flower draws its DP noise from it

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if server_round == 0:
            grid.take()
            return None
        model.load_state_dict(arrays.to_torch_state_dict())
        loss, acc = evaluate(model, x_test, data.y_test)
        row: dict[str, Any] = {
            "round": server_round,
            "student_accuracy": acc,
            "student_loss": loss,
            **grid.take(),
        }
        if accountant is not None:
            row["epsilon_client"] = float(accountant.get_privacy_spent().epsilon)
            row["delta_client"] = delta
        rec.add(row)
        return MetricRecord({"accuracy": acc, "loss": loss})

    train_config = ConfigRecord(
        {RUN_CONFIG: json.dumps(to_dict(cfg)), EQUAL_WEIGHTS: bool(private)}
    )
    stopped = None
    try:
        strategy.start(
            grid,
            ArrayRecord(model.state_dict()),
            num_rounds=cfg.rounds,
            timeout=cfg.runtime.round_timeout,
            train_config=train_config,
            evaluate_fn=evaluate_fn,
        )
    except PrivacyBudgetExhausted as err:
        stopped = f"privacy budget reached: {err}"
        logger.warning("%s: %s", method, stopped)
    extra: dict[str, Any] = {"clients_per_round": k}
    if private:
        extra.update(
            {
                "noise_multiplier": cfg.privacy.gaussian.noise_multiplier,
                "clip_norm": cfg.privacy.gaussian.clip_norm,
                "accounting": "flwr RdpAccountant, no-amplification, add-or-remove-one",
            }
        )
    return rec.finish(extra, stopped=stopped)
