"""The federated-distillation strategy: Flower's round loop, soft labels instead of weights.

``DistillStrategy`` implements Flower's four strategy methods and reuses
``Strategy.start``. The ``arrays`` it passes from round to round are the teacher's soft
labels on the round's proxy rows (``idx``, ``probs``), never model weights. The math lives
in ``fedkd``; this file only moves records.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedkd import protocol as proto
from fedkd.config import Config, wire_dict
from fedkd.mechanisms import BudgetReached, CentralMechanism, RunStopped
from fedkd.student import Student
from fedkd.teacher import ReplyError, TeacherCache, accuracy, decode_reply
from fedkd.validation import val_metrics

logger = logging.getLogger(__name__)

#: Error codes of the faults a simulation injects (client.app's SIMULATED_DROPOUT and
#: SIMULATED_LOSS): planned, so they never make a client count as failing.
SIMULATED_FAULTS = frozenset({101, 102})
SIMULATED = "simulated fault"


class DistillStrategy(Strategy):
    """Ensemble-teacher distillation over Flower (see module docstring).

    Parameters
    ----------
    cfg : Config
        The run configuration.
    splits : Splits
        Server view of the data: proxy inputs (labels only for teacher accuracy) and test.
    mechanism : CentralMechanism
        Aggregation plus the client-level privacy mechanism and its ledger.
    on_round : callable
        ``on_round(row)`` after each aggregated round (metrics, checkpoint, progress).
    first_round : int
        Rounds already done (resume); Flower's round ``r`` is fedkd round ``first_round + r``.
    """

    def __init__(
        self,
        cfg: Config,
        splits: Any,
        mechanism: CentralMechanism,
        student: Student,
        cache: TeacherCache,
        on_round: Callable[[dict[str, Any]], None],
        first_round: int = 0,
        state_dir: str | None = None,
    ) -> None:
        self.cfg = cfg
        self.splits = splits
        self.mechanism = mechanism
        self.student = student
        self.cache = cache
        self.on_round = on_round
        self.first_round = first_round
        self.state_dir = state_dir
        self.codec = proto.codec_for(cfg)
        self.config_json = json.dumps(wire_dict(cfg))
        self.nodes: dict[int, int] = {}  # client id -> node id
        self._round: dict[str, Any] = {}
        self.last_teacher = ArrayRecord()  # sent for the digest step; checkpointed
        self.failed_rounds = 0  # consecutive rounds with too few valid replies
        # Client id -> {"asked", "answered", "reason"} (first failure); checkpointed. Not
        # kept under Poisson sampling, where who was asked is secret.
        self.failures: dict[int, dict[str, Any]] = {}

    # -- helpers --------------------------------------------------------------------------
    def _base_config(self, server_round: int) -> ConfigRecord:
        items: dict[str, Any] = {proto.ROUND: server_round, proto.RUN_CONFIG: self.config_json}
        if self.state_dir:
            items[proto.STATE_DIR] = self.state_dir
        return ConfigRecord(items)

    def discover(self, grid: Grid, timeout: float) -> dict[int, int]:
        """Wait for the clients and learn their stable ids (``query.info`` handshake)."""
        want = self.cfg.clients.num_clients
        deadline = time.monotonic() + timeout
        node_ids = list(grid.get_node_ids())
        while len(node_ids) < want:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(node_ids)} of {want} clients connected in time")
            time.sleep(0.2)
            node_ids = list(grid.get_node_ids())
        msgs = [
            Message(
                RecordDict({proto.CONFIG: self._base_config(0)}),
                dst_node_id=n,
                message_type=proto.INFO,
            )
            for n in node_ids
        ]
        for reply in grid.send_and_receive(msgs, timeout=timeout):
            src = reply.metadata.src_node_id
            if reply.has_error():
                logger.warning("node %s failed the handshake: %s", src, reply.error.reason)
                continue
            metrics = reply.content[proto.METRICS]
            cid = int(metrics[proto.CLIENT_ID])
            self.nodes[cid] = src
            self.mechanism.sizes[cid] = int(metrics[proto.NUM_EXAMPLES])
        logger.info("%d clients ready: ids %s", len(self.nodes), sorted(self.nodes))
        if self.cfg.privacy.mechanisms:
            from fedkd.privacy.checks import check_privacy_config

            # Every entry point refuses δ >= 1/N, flwr run and deployments included.
            check_privacy_config(self.cfg, [self.mechanism.sizes[c] for c in sorted(self.nodes)])
        return self.nodes

    def _validate(
        self, reply: Message, num_rows: int, num_classes: int
    ) -> tuple[int, np.ndarray, dict[str, Any]]:
        """Check one reply's records, metrics and predictions (raises ReplyError)."""
        content = reply.content
        if set(content.array_records) != {proto.PREDICTIONS} or set(content.metric_records) != {
            proto.METRICS
        }:
            raise ReplyError(
                f"expected records {proto.PREDICTIONS!r} and {proto.METRICS!r}, got "
                f"{sorted(content.array_records) + sorted(content.metric_records)}"
            )
        arrays = {k: v.numpy() for k, v in content[proto.PREDICTIONS].items()}
        metrics = dict(content[proto.METRICS])
        cid, probs = decode_reply(arrays, metrics, self.codec, num_rows, num_classes)
        if cid not in self.nodes or self.nodes[cid] != reply.metadata.src_node_id:
            raise ReplyError(f"client-id {cid} does not belong to the node that replied")
        self.mechanism.reconcile_dpsgd(self._round["round"], cid, metrics)
        self.mechanism.check_client_epsilon(cid, metrics)
        return cid, probs, metrics

    def _tally(self, sampled: Iterable[int], outcome: dict[int, str | None]) -> None:
        """Count one round for each client asked (simulated faults are not counted)."""
        for cid in sampled:
            reason = outcome.get(cid, "no reply within runtime.round_timeout")
            if reason == SIMULATED:
                continue
            entry = self.failures.setdefault(int(cid), {"asked": 0, "answered": 0, "reason": None})
            entry["asked"] += 1
            if reason is None:
                entry["answered"] += 1
            elif entry["reason"] is None:
                entry["reason"] = reason

    def failing_clients(self) -> dict[str, dict[str, Any]]:
        """Clients that failed every round they were asked, with the first reason.

        Returns
        -------
        dict
            ``{client id (str): {"rounds": asked, "reason": first failure}}``, sorted by
            id; empty under Poisson sampling (who was asked is secret).
        """
        return {
            str(cid): {"rounds": e["asked"], "reason": e["reason"]}
            for cid, e in sorted(self.failures.items())
            if e["asked"] > 0 and e["answered"] == 0
        }

    # -- Flower strategy API --------------------------------------------------------------
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Sample clients, pick the round's proxy rows, send them plus last round's teacher."""
        rnd = self.first_round + server_round
        if self.failed_rounds >= self.cfg.runtime.max_failed_rounds:
            raise RunStopped(
                f"stopped before round {rnd}: {self.failed_rounds} consecutive rounds had fewer "
                f"than clients.min_replies={self.cfg.clients.min_replies} valid replies"
            )
        if not self.nodes:
            self.discover(grid, self.cfg.runtime.round_timeout)
        c = self.cfg.clients
        chosen = proto.sample_clients(
            list(self.nodes),
            c.sampling,
            rate=c.sample_rate,
            size=c.sample_size,
            seed=self.cfg.seed,
            server_round=rnd,
            rng=self.mechanism.rng(rnd, 0x5A),  # a privacy draw under Poisson sampling
        )
        self.mechanism.check_budget(rnd, len(self.nodes))  # raises BudgetReached
        charged = self.mechanism.charge_dpsgd(rnd, chosen)  # before anything is sent
        idx = proto.proxy_subset(
            len(self.splits.x_proxy), self.cfg.distill.proxy_per_round, self.cfg.seed, rnd
        )
        self._round = {"round": rnd, "idx": idx, "t0": time.monotonic(), "sampled": chosen}
        records: dict[str, Any] = {
            proto.CONFIG: self._base_config(rnd),
            proto.PROXY: ArrayRecord({"idx": Array(idx)}),
        }
        if "idx" in arrays and c.digest_epochs > 0:  # no digest: the labels would be unused
            records[proto.TEACHER] = arrays
        messages = []
        down = 0
        for cid in chosen:
            content = RecordDict(dict(records))
            if cid in charged:
                config_items = dict(self._base_config(rnd))
                config_items[proto.DPSGD_STEPS] = charged[cid]
                content[proto.CONFIG] = ConfigRecord(config_items)
            down += proto.record_dict_bytes(content.values())
            messages.append(Message(content, dst_node_id=self.nodes[cid], message_type=proto.TRAIN))
        self._round["bytes_down"] = down
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Validate replies, build the teacher, distil the student."""
        info = self._round
        idx = info["idx"]
        num_classes = int(self.splits.num_classes)
        accepted: list[tuple[int, np.ndarray, float, dict[str, Any]]] = []
        bytes_up, dropped = {}, 0
        # Under Poisson client sampling, who took part is secret (the accountant's
        # amplification assumes it): nothing published names a participant.
        secret = self.cfg.clients.sampling == "poisson"
        client_of = {node: cid for cid, node in self.nodes.items()}
        outcome: dict[int, str | None] = {}  # client id -> None (answered) or why not
        for reply in replies:
            src = "(withheld)" if secret else reply.metadata.src_node_id
            sender = client_of.get(reply.metadata.src_node_id)
            if reply.has_error():
                dropped += 1
                reason = (reply.error.reason or "").strip().splitlines() or [str(reply.error.code)]
                if sender is not None:
                    simulated = reply.error.code in SIMULATED_FAULTS
                    outcome[sender] = SIMULATED if simulated else reason[-1]
                if not secret:
                    logger.warning(
                        "round %d: node %s replied with an error: %s",
                        info["round"],
                        src,
                        reason[-1],
                    )
                continue
            bytes_up[reply.metadata.src_node_id] = proto.record_dict_bytes(reply.content.values())
            try:
                cid, probs, metrics = self._validate(reply, len(idx), num_classes)
            except ReplyError as err:
                dropped += 1
                if sender is not None:
                    outcome[sender] = f"reply dropped: {err}"
                if not secret:
                    logger.warning(
                        "round %d: dropped reply of node %s: %s", info["round"], src, err
                    )
                continue
            outcome[cid] = None
            accepted.append((cid, probs, float(metrics[proto.NUM_EXAMPLES]), metrics))
        if not secret:
            self._tally(info.get("sampled", list(outcome)), outcome)
        accepted.sort(key=lambda t: t[0])  # deterministic order whatever the arrival order
        row: dict[str, Any] = {
            "round": info["round"],
            "clients": len(accepted),
            "dropped": dropped,
            "bytes_up": int(sum(bytes_up.values())),
            "bytes_down": int(info["bytes_down"]),
        }
        if secret:
            # Under Poisson sampling the number who took part is secret too: a known sample
            # size changes the amplification the accountant applies.
            for key in ("clients", "dropped", "bytes_up", "bytes_down"):
                row[key] = None
        else:
            row["bytes_up_per_client"] = {str(k): v for k, v in sorted(bytes_up.items())}
        teacher_record: ArrayRecord | None = None
        # The central Gaussian mechanism releases every round, even with no valid reply
        # (pure noise): skipping would make the release depend on who took part.
        always = self.mechanism.releases_every_round
        if len(accepted) >= self.cfg.clients.min_replies or always:
            preds = np.zeros((0, len(idx), num_classes), np.float32)
            if accepted:
                preds = np.stack([p for _, p, _, _ in accepted])  # (K, M, C)
            weights = np.array([w for _, _, w, _ in accepted])
            rows, teacher = self.mechanism.teacher(info["round"], preds, weights, len(self.nodes))
            self.failed_rounds = 0
            self.cache.update(idx[rows], teacher)
            row["teacher_accuracy"] = accuracy(teacher, self.splits.y_proxy[idx[rows]])
            row["answered"] = int(len(rows))
            row["distill_loss"] = self.student.distill(
                self.splits.x_proxy, self.cache, info["round"]
            )
            teacher_record = ArrayRecord(
                {
                    "idx": Array(idx[rows].astype(np.int32)),
                    "probs": Array(teacher.astype(np.float16)),
                }
            )
            self.last_teacher = teacher_record
        else:
            self.failed_rounds += 1
            logger.warning(
                "round %d: %s valid replies < clients.min_replies=%d, teacher unchanged",
                info["round"],
                "(count withheld)" if secret else len(accepted),
                self.cfg.clients.min_replies,
            )
            row["teacher_accuracy"] = float("nan")
        row.update(self.mechanism.epsilons())
        self._round["row"] = row
        return teacher_record, None

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """No federated evaluation: the student is evaluated on the server's test set."""
        return []

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Nothing to aggregate (see :meth:`configure_evaluate`)."""
        return None

    def evaluate(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        """Server-side evaluation hook for ``Strategy.start`` (round 0 is skipped)."""
        if server_round == 0:
            return None
        row = self._round["row"]
        loss, acc = self.student.evaluate(self.splits.x_test, self.splits.y_test)
        row["student_loss"], row["student_accuracy"] = float(loss), float(acc)
        row.update(val_metrics(self.student.evaluate, self.splits.x_val, self.splits.y_val))
        seconds = round(time.monotonic() - self._round["t0"], 3)
        # A round's duration grows with who trained: withheld under Poisson sampling.
        row["seconds"] = None if self.cfg.clients.sampling == "poisson" else seconds
        self.on_round(row)
        return MetricRecord({"student_accuracy": acc, "student_loss": loss})

    def summary(self) -> None:
        """Log the strategy's settings."""
        d = self.cfg.distill
        logger.info(
            "DistillStrategy: %d clients, student %s, aggregation %s, codec %s, privacy %s",
            self.cfg.clients.num_clients,
            d.student,
            d.aggregation,
            self.codec.name,
            ",".join(self.cfg.privacy.mechanisms) or "none",
        )


__all__ = ["BudgetReached", "DistillStrategy", "RunStopped"]
