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
from fedkd.config import Config
from fedkd.local import client_model_name
from fedkd.mechanisms import BudgetReached, CentralMechanism, RunStopped
from fedkd.mechanisms.client import codec_for
from fedkd.student import Student
from fedkd.teacher import ReplyError, TeacherCache, accuracy, decode_reply
from fedkd.validation import val_metrics
from fedkd.warmstart import head_arrays, warm_starts
from fedkd.wire import wire_dict

from .record import Reply, RoundRecord, label_record

logger = logging.getLogger(__name__)

#: Error codes of the faults a simulation injects (fedkd.client.app's SIMULATED_DROPOUT and
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
        The run's mechanisms behind their hooks (teacher release, charges, reply checks)
        and the privacy ledger.
    on_round : callable
        ``on_round(record)`` with each finished :class:`RoundRecord` (metrics, ledger,
        checkpoint, progress).
    first_round : int
        Rounds already done (resume); Flower's round ``r`` is fedkd round ``first_round + r``.
    state_dir : str, optional
        Folder the simulated clients keep their state in (sent with every message).
    """

    def __init__(
        self,
        cfg: Config,
        splits: Any,
        mechanism: CentralMechanism,
        student: Student,
        cache: TeacherCache,
        on_round: Callable[[RoundRecord], None],
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
        self.codec = codec_for(cfg)
        self.config_json = json.dumps(wire_dict(cfg))
        self.nodes: dict[int, int] = {}  # client id -> node id
        self.records: dict[int, RoundRecord] = {}  # fedkd round -> its record
        self.teacher = ArrayRecord()  # the last released teacher (digest step); checkpointed
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

    def _validate(self, reply: Message, record: RoundRecord) -> Reply:
        """Check one reply's records, metrics and predictions (raises ReplyError)."""
        content = reply.content
        if set(content.array_records) != {proto.PREDICTIONS} or set(content.metric_records) != {
            proto.METRICS
        }:
            raise ReplyError(
                f"expected records {proto.PREDICTIONS!r} and {proto.METRICS!r}, got "
                f"{sorted(content.array_records) + sorted(content.metric_records)}"
            )
        try:
            arrays = {k: v.numpy() for k, v in content[proto.PREDICTIONS].items()}
        except (TypeError, ValueError) as err:  # not a NumPy array on the wire
            raise ReplyError(f"predictions: an array that does not load ({err})") from err
        metrics = dict(content[proto.METRICS])
        num_classes = int(self.splits.num_classes)
        cid, probs = decode_reply(arrays, metrics, self.codec, len(record.idx), num_classes)
        if cid not in self.nodes or self.nodes[cid] != reply.metadata.src_node_id:
            raise ReplyError(f"{proto.CLIENT_ID} {cid} does not belong to the node that replied")
        # Each client counts once, and only when asked: the accountant assumes it (one vote or
        # one clipped matrix per sampled client). Flower delivers one reply per message, so
        # this only ever fires on a node that forges replies.
        if cid not in record.sampled:
            raise ReplyError(f"{proto.CLIENT_ID} {cid} was not asked this round")
        if any(r.client_id == cid for r in record.replies):
            raise ReplyError(f"a second reply from {proto.CLIENT_ID} {cid} this round")
        self.mechanism.on_reply(record.round, cid, metrics)
        return Reply(cid, probs, float(metrics[proto.NUM_EXAMPLES]), metrics)

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
        ledger_start = len(self.mechanism.ledger)
        extra = self.mechanism.on_send(rnd, chosen)  # charges before anything is sent
        idx = proto.proxy_subset(
            len(self.splits.x_proxy), self.cfg.distill.proxy_per_round, self.cfg.seed, rnd
        )
        record = RoundRecord(
            round=rnd,
            idx=idx,
            sampled=chosen,
            t0=time.monotonic(),
            secret=c.sampling == "poisson",
            ledger_start=ledger_start,
        )
        self.records[rnd] = record
        return self._messages(record, arrays, extra)

    def _messages(
        self, record: RoundRecord, arrays: ArrayRecord, extra: dict[int, dict[str, Any]]
    ) -> list[Message]:
        """One train message per sampled client; counts the bytes sent into ``record``."""
        records: dict[str, Any] = {
            proto.CONFIG: self._base_config(record.round),
            proto.PROXY: ArrayRecord({proto.IDX: Array(record.idx)}),
        }
        if self.cfg.distill.digest_target == "student":  # set by end_round, checkpointed
            arrays = self.teacher
        c = self.cfg.clients
        if proto.IDX in arrays and (c.digest_epochs > 0 or c.joint_distill > 0):  # else unused
            records[proto.TEACHER] = arrays
        student = self._student_record()
        messages = []
        for cid in record.sampled:
            content = RecordDict(dict(records))
            if student is not None and warm_starts(self.cfg, client_model_name(self.cfg, cid)):
                content[proto.STUDENT] = student
            if cid in extra:
                items = dict(self._base_config(record.round))
                items.update(extra[cid])
                content[proto.CONFIG] = ConfigRecord(items)
            record.bytes_down += proto.record_dict_bytes(content.values())
            messages.append(Message(content, dst_node_id=self.nodes[cid], message_type=proto.TRAIN))
        return messages

    def _student_record(self) -> ArrayRecord | None:
        """The student's trainable weights (``distill.warm_start``), else None.

        Post-processing of released teachers and public inputs: downlink only, no charge.
        """
        if not self.cfg.distill.warm_start:
            return None
        arrays = head_arrays(self.student.head)
        return ArrayRecord({k: Array(v) for k, v in arrays.items()})

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Validate the replies and release the round's teacher (the next round's arrays)."""
        record = self.records[self.first_round + server_round]
        self._collect(record, replies)
        self._release(record)
        return (self.teacher if record.release is not None else None), None

    def _collect(self, record: RoundRecord, replies: Iterable[Message]) -> None:
        """Sort the replies into valid ones, errors and dropped ones (logged unless secret)."""
        client_of = {node: cid for cid, node in self.nodes.items()}
        for reply in replies:
            src = "(withheld)" if record.secret else reply.metadata.src_node_id
            sender = client_of.get(reply.metadata.src_node_id)
            if reply.has_error():
                record.dropped += 1
                reason = (reply.error.reason or "").strip().splitlines() or [str(reply.error.code)]
                if sender is not None:
                    simulated = reply.error.code in SIMULATED_FAULTS
                    record.outcome[sender] = SIMULATED if simulated else reason[-1]
                if not record.secret:
                    logger.warning(
                        "round %d: node %s replied with an error: %s", record.round, src, reason[-1]
                    )
                continue
            size = proto.record_dict_bytes(reply.content.values())
            record.bytes_up[reply.metadata.src_node_id] = size
            try:
                valid = self._validate(reply, record)
            except ReplyError as err:
                record.dropped += 1
                if sender is not None:
                    record.outcome[sender] = f"reply dropped: {err}"
                if not record.secret:
                    logger.warning("round %d: dropped reply of node %s: %s", record.round, src, err)
                continue
            record.outcome[valid.client_id] = None
            record.replies.append(valid)
        if not record.secret:
            self._tally(record.sampled, record.outcome)
        record.replies.sort(key=lambda r: r.client_id)  # deterministic whatever the arrival
        record.clients = len(record.replies)

    def _release(self, record: RoundRecord) -> None:
        """The mechanism's teacher for the round, or none with too few valid replies.

        A mechanism that releases every round does so even with no valid reply (pure
        noise): skipping would make the release depend on who took part.
        """
        enough = len(record.replies) >= self.cfg.clients.min_replies
        if not (enough or self.mechanism.releases_every_round):
            self.failed_rounds += 1
            logger.warning(
                "round %d: %s valid replies < clients.min_replies=%d, teacher unchanged",
                record.round,
                "(count withheld)" if record.secret else len(record.replies),
                self.cfg.clients.min_replies,
            )
            return
        preds, weights = record.stacked(int(self.splits.num_classes))
        release = self.mechanism.release(record.round, preds, weights, len(self.nodes))
        self.failed_rounds = 0
        rows = record.idx[release.rows]
        self.cache.update(rows, release.teacher)
        record.release = release
        record.teacher_accuracy = accuracy(release.teacher, self.splits.y_proxy[rows])
        self.teacher = record.teacher_record(self.cfg.distill.max_entropy)

    def end_round(self, record: RoundRecord) -> MetricRecord:
        """Distil -> evaluate -> record (``on_round``: metrics, ledger, checkpoint)."""
        if record.release is not None:
            record.distill_loss = self.student.distill(
                self.splits.x_proxy, self.cache, record.round
            )
            if self.cfg.distill.digest_target == "student":  # post-processing, public inputs
                x = self.splits.x_proxy
                self.teacher = label_record(np.arange(len(x)), self.student.soft_labels(x))
        loss, acc = self.student.evaluate(self.splits.x_test, self.splits.y_test)
        record.student_loss, record.student_accuracy = float(loss), float(acc)
        record.val = val_metrics(self.student.evaluate, self.splits.x_val, self.splits.y_val)
        record.seconds = round(time.monotonic() - record.t0, 3)
        record.epsilons = self.mechanism.epsilons()
        record.entries = self.mechanism.ledger.releases[record.ledger_start :]
        record.replies = []  # the predictions are not kept past the round
        self.on_round(record)
        return MetricRecord({"student_accuracy": acc, "student_loss": loss})

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
        """Server-side evaluation hook of ``Strategy.start``: the end of a round (not 0)."""
        if server_round == 0:
            return None
        return self.end_round(self.records[self.first_round + server_round])

    # -- checkpoint -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """What a resume needs of the strategy: the last teacher and the failure tally."""
        return {"teacher": self.teacher, "client_failures": self.failures}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (a checkpoint's keys)."""
        self.teacher = state.get("teacher", ArrayRecord())
        self.failures = dict(state.get("client_failures", {}))

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
