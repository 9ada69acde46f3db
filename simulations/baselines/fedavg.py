"""FedAvg and DP-FedAvg baselines on Flower's FedAvg strategy (weights DO travel).

``fedavg`` runs :class:`SeededFedAvg` (Flower's ``FedAvg`` whose node sampling draws from
its own generator seeded from ``seed``, not from the global ``random``) with the student
architecture (with fixed public features, ``distill.feature_map`` /
``distill.public_features``, only the trainable head travels: the feature map is public and
the same on every node); ``dp-fedavg`` wraps it in
:class:`~fedkd.simulations.baselines.dpfedavg.DifferentialPrivacyFixedDenominator` (server-side
clipping, the sum of clipped updates divided by the fixed number K of clients asked,
Gaussian noise of std ``σ · clip_norm / K`` from OS entropy) with Flower's
``RdpAccountant``. Both run on an in-process Grid (:class:`CountingGrid`) with the small
ClientApp :data:`app` of this module, which trains the received weights on the client's
partition for ``clients.local_epochs`` epochs and sends them back.

``dp-fedavg`` samples a fixed number of clients per round (all, or ``clients.sample_size``
with ``clients.sampling: fixed``) and ε is accounted *without* sampling amplification
(``SamplingMethod.NO_AMPLIFICATION``, ``NeighboringRelation.ADD_OR_REMOVE_ONE``): one
release per round, charged before the replies arrive. σ = ``privacy.gaussian.noise_multiplier``,
clip = ``privacy.gaussian.clip_norm``, δ = ``privacy.client_delta`` (else ``privacy.delta``).

Randomness: model initialisation, node sampling and the clients' minibatches are seeded
from ``seed`` (non-private FedAvg is bit-reproducible); the DP noise is not (it comes from
``os.urandom``). Nothing here seeds the global ``random`` or NumPy generators.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fedkd.simulations.baselines.common import (
    CountingGrid,
    generator,
    load_data,
    model_on_features,
    open_run,
)
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fedkd.clientdata import client_data
from fedkd.config import Config, ConfigError, from_dict
from fedkd.distill import evaluate, make_optimizer, train_supervised
from fedkd.validation import val_metrics
from fedkd.wire import wire_dict

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
            "dp-fedavg is accounted with no-amplification (a fixed number of clients asked "
            "per round); set clients.sampling to all or fixed"
        )
    return c.sample_rate  # FedAvg samples round(N * fraction) nodes, not Poisson


class SeededFedAvg(FedAvg):
    """Flower's ``FedAvg`` whose node sampling uses its own ``random.Random(seed)``.

    Flower's ``FedAvg.configure_train`` samples with the global ``random`` module; this one
    samples the same number of nodes (``max(int(N · fraction_train), min_train_nodes)``)
    from the sorted node ids with a private generator, so runs are reproducible without
    seeding any global RNG. Everything else is Flower's ``FedAvg``.
    """

    def __init__(self, *args: Any, seed: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        mixed = np.random.SeedSequence([int(seed), 31]).generate_state(1)[0]
        self._sampler = random.Random(int(mixed))

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Sample nodes with the private generator; send them the arrays and config."""
        if self.fraction_train == 0.0:
            return []
        nodes = sorted(int(n) for n in grid.get_node_ids())
        if len(nodes) < self.min_available_nodes:
            raise RuntimeError(f"{len(nodes)} nodes, need {self.min_available_nodes}")
        size = min(max(int(len(nodes) * self.fraction_train), self.min_train_nodes), len(nodes))
        node_ids = nodes if size == len(nodes) else self._sampler.sample(nodes, size)
        config["server-round"] = server_round
        record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
        return self._construct_messages(record, node_ids, MessageType.TRAIN)


def _private(cfg: Config, inner: FedAvg, k: int, delta: float) -> tuple[Any, Any]:
    """``inner`` wrapped in the fixed-denominator DP strategy, and its Flower accountant."""
    from fedkd.simulations.baselines.dpfedavg import DifferentialPrivacyFixedDenominator
    from flwr.serverapp import NeighboringRelation, PrivacyConfig, RdpAccountant, SamplingMethod

    accountant = RdpAccountant(
        PrivacyConfig(
            target_delta=delta,
            population_size=cfg.clients.num_clients,
            neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
            sampling_method=SamplingMethod.NO_AMPLIFICATION,
            max_epsilon=cfg.privacy.max_epsilon,
        )
    )
    g = cfg.privacy.gaussian
    strategy = DifferentialPrivacyFixedDenominator(
        inner, g.noise_multiplier, g.clip_norm, k, accountant=accountant
    )
    return strategy, accountant


def _extra(cfg: Config, k: int, private: bool) -> dict[str, Any]:
    """The method-specific keys of the ``DONE`` summary."""
    extra: dict[str, Any] = {"clients_per_round": k}
    if private:
        extra.update(
            {
                "noise_multiplier": cfg.privacy.gaussian.noise_multiplier,
                "clip_norm": cfg.privacy.gaussian.clip_norm,
                "accounting": "flwr RdpAccountant, no-amplification, add-or-remove-one",
                "mechanism": "sum of clipped updates / K asked, noise σ·S/K, OS entropy",
            }
        )
    return extra


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
        Wrap FedAvg in
        :class:`~fedkd.simulations.baselines.dpfedavg.DifferentialPrivacyFixedDenominator`
        with Flower's ``RdpAccountant``.

    Returns
    -------
    dict
        The summary written to ``DONE`` (``epsilon_client``/``delta_client`` when private).
    """
    from flwr.serverapp.exception import PrivacyBudgetExhausted

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
    model, (x_test, x_val) = model_on_features(
        cfg,
        cfg.distill.student,
        "distill",
        data.input_shape,
        data.num_classes,
        cfg.seed,
        data.x_test,
        data.x_val,
    )
    strategy: Any = SeededFedAvg(
        fraction_train=fraction,
        fraction_evaluate=0.0,
        min_train_nodes=min(2, n_clients),
        min_available_nodes=n_clients,
        seed=cfg.seed,
    )
    accountant = None
    if private:
        strategy, accountant = _private(cfg, strategy, k, delta)
    grid = CountingGrid(app, n_clients)

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
            **val_metrics(lambda x, y: evaluate(model, x, y), x_val, data.y_val),
            **grid.take(),
        }
        if accountant is not None:
            row["epsilon_client"] = float(accountant.get_privacy_spent().epsilon)
            row["delta_client"] = delta
        rec.add(row)
        return MetricRecord({"accuracy": acc, "loss": loss})

    train_config = ConfigRecord(
        {RUN_CONFIG: json.dumps(wire_dict(cfg)), EQUAL_WEIGHTS: bool(private)}
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
    return rec.finish(_extra(cfg, k, private), stopped=stopped)
