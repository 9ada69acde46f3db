"""Bad replies are dropped and logged, never crash a round; simulated faults behave."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from fedkd.server.record import RoundRecord
from fedkd.server.strategy import DistillStrategy
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from fedkd import attacks
from fedkd.clientdata import splits_for
from fedkd.compress import get_codec
from fedkd.config import from_dict
from fedkd.mechanisms import CentralMechanism
from fedkd.student import Student
from fedkd.teacher import TeacherCache

NODES = {0: 100, 1: 101, 2: 102, 3: 103}
M, C = 12, 10


def _strategy(codec: str, sampling: str = "all") -> DistillStrategy:
    cfg = from_dict(
        {
            "clients": {"num_clients": 4, "sampling": sampling, "sample_rate": 0.5},
            "distill": {"codec": codec, "epochs": 0, "student": "mlp"},
        }
    )
    splits = splits_for(cfg.data, cfg.seed)
    strategy = DistillStrategy(
        cfg,
        splits,
        CentralMechanism(cfg, len(splits.y_private), len(splits.x_proxy)),
        Student(cfg, tuple(splits.input_shape), C),
        TeacherCache.empty(len(splits.x_proxy), C),
        on_round=lambda row: None,
    )
    strategy.nodes = dict(NODES)
    return strategy


def _open_round(strategy: DistillStrategy, rnd: int, sampled: list[int]) -> RoundRecord:
    """What configure_train leaves for aggregate_train: the round's record."""
    secret = strategy.cfg.clients.sampling == "poisson"
    record = RoundRecord(round=rnd, idx=np.arange(M), sampled=sampled, t0=0.0, secret=secret)
    strategy.records[rnd] = record
    return record


def _reply(node: int, arrays: dict | None, metrics: dict | None, extra: bool = False) -> Message:
    request = Message(
        RecordDict({"c": ConfigRecord({"x": 1})}), dst_node_id=node, message_type="train"
    )
    records: dict = {}
    if arrays is not None:
        records["predictions"] = ArrayRecord({k: Array(v) for k, v in arrays.items()})
    if metrics is not None:
        records["metrics"] = MetricRecord(metrics)
    if extra:
        records["weights"] = ArrayRecord({"w": Array(np.zeros(3, np.float32))})
    return Message(RecordDict(records), reply_to=request)


def _valid(rng: np.random.Generator) -> np.ndarray:
    z = rng.normal(size=(M, C))
    e = np.exp(z)
    return (e / e.sum(1, keepdims=True)).astype(np.float32)


def _malformed(rng: np.random.Generator, codec: str) -> tuple[int, dict | None, dict | None, bool]:
    """One reply that must be rejected: (node, arrays, metrics, extra record)."""
    cid = int(rng.integers(0, 4))
    node = NODES[cid]
    good = get_codec(codec).encode(_valid(rng))
    metrics = {"client-id": cid, "num-examples": 50}
    key = next(iter(good))
    kind = int(rng.integers(0, 16))
    a = dict(good)
    if kind == 0:
        a[key] = np.full_like(a[key], np.nan) if a[key].dtype.kind == "f" else a[key][:0]
    elif kind == 1:
        a[key] = np.full(a[key].shape, np.inf, np.float32)
    elif kind == 2:  # wrong shape
        shape = list(a[key].shape)
        shape[int(rng.integers(0, len(shape)))] += int(rng.integers(1, 5))
        a[key] = np.zeros(shape, a[key].dtype)
    elif kind == 3:  # wrong dtype
        a[key] = a[key].astype(np.float64 if a[key].dtype != np.float64 else np.float32)
    elif kind == 4:  # empty
        a[key] = np.zeros((0,), a[key].dtype)
    elif kind == 5:  # huge
        a[key] = np.zeros((M * 50, C), np.float32)
    elif kind == 6:  # negative probabilities / out of range values
        a[key] = (-np.abs(a[key].astype(np.float32)) - 1).astype(a[key].dtype)
    elif kind == 7:  # missing key
        a = {"other": a[key]}
    elif kind == 8:  # extra key
        a["extra"] = np.zeros(3, np.float32)
    elif kind == 9:
        a = None  # no predictions record
    elif kind == 10:
        metrics = None  # no metrics record
    elif kind == 11:
        metrics["num-examples"] = float(rng.choice([0.0, -3.0, np.nan, np.inf]))
    elif kind == 12:
        metrics["client-id"] = int(rng.choice([-1, 7, (cid + 1) % 4]))  # foreign or unknown id
    elif kind == 13:
        metrics.update(
            {
                "dpsgd-epsilon": -1.0,
                "dpsgd-steps": 3,
                "dpsgd-noise": 1.0,
                "dpsgd-sample-rate": 0.1,
                "dpsgd-population": 50,
            }
        )
    elif kind == 14:
        metrics["dpsgd-epsilon"] = 0.5  # incomplete DP-SGD metrics
    else:
        return node, a, metrics, True  # a weights record smuggled in
    if kind == 6 and codec in ("int8", "onebit", "vote"):  # unsigned: corrupt differently
        if codec == "onebit":
            a[key] = np.zeros_like(a[key])  # rows without a vote
        elif codec == "vote":
            a[key] = np.full_like(a[key], 0xFF)  # class index 15 of 10
        if codec == "int8":
            a["scale"] = np.full(M, -1.0, np.float16)
    return node, a, metrics, False


@pytest.mark.parametrize("codec", ["fp32", "fp16", "int8", "onebit", "vote", "topk"])
def test_fuzzed_replies_are_all_rejected_and_logged(codec, caplog):
    # Prepare: 2,000 malformed replies per codec (12,000 in all), mixed with valid ones.
    rng = np.random.default_rng(["fp32", "fp16", "int8", "onebit", "vote", "topk"].index(codec))
    strategy = _strategy(codec)
    caplog.set_level(logging.WARNING, logger="fedkd.server.strategy")
    bad_total = 0
    for batch in range(40):
        record = _open_round(strategy, batch + 1, sorted(NODES))
        replies = []
        for _ in range(50):
            node, arrays, metrics, extra = _malformed(rng, codec)
            replies.append(_reply(node, arrays, metrics, extra))
        bad_total += len(replies)
        valid_cid = batch % 4
        replies.append(
            _reply(
                NODES[valid_cid],
                get_codec(codec).encode(_valid(rng)),
                {"client-id": valid_cid, "num-examples": 10},
            )
        )
        # Execute: no exception may escape.
        teacher, _ = strategy.aggregate_train(batch + 1, replies)
        # Assert: exactly the valid reply was used.
        row = record.metrics()
        assert row["clients"] == 1 and row["dropped"] == 50
        assert teacher is not None and np.all(np.isfinite(teacher["probs"].numpy()))
    dropped_logs = [r for r in caplog.records if "dropped reply" in r.getMessage()]
    assert len(dropped_logs) == bad_total == 2000


def test_too_few_valid_replies_leave_teacher_unchanged_then_stop():
    from fedkd.mechanisms import RunStopped

    strategy = _strategy("fp32")
    _open_round(strategy, 1, sorted(NODES))
    for _ in range(3):
        teacher, _ = strategy.aggregate_train(1, [_reply(100, None, None)])
        assert teacher is None
    with pytest.raises(RunStopped, match="3 consecutive rounds"):
        list(strategy.configure_train(2, ArrayRecord(), ConfigRecord(), grid=None))


def _error(node: int, code: int, reason: str) -> Message:
    from flwr.app import Error

    request = Message(
        RecordDict({"c": ConfigRecord({"x": 1})}), dst_node_id=node, message_type="train"
    )
    return Message(Error(code=code, reason=reason), reply_to=request)


def _answer(cid: int, rng: np.random.Generator) -> Message:
    return _reply(
        NODES[cid], get_codec("fp32").encode(_valid(rng)), {"client-id": cid, "num-examples": 10}
    )


@pytest.mark.parametrize("sampling", ["all", "poisson"])
def test_clients_failing_every_round_they_were_asked_are_named(sampling):
    from fedkd.client.app import CLIENT_FAILURE, SIMULATED_DROPOUT, SIMULATED_LOSS
    from fedkd.server.strategy import SIMULATED_FAULTS

    assert {SIMULATED_DROPOUT, SIMULATED_LOSS} == SIMULATED_FAULTS
    rng = np.random.default_rng(0)
    strategy = _strategy("fp32", sampling)
    crash = "node 0: the round failed (details in the device's own log)"
    rounds = [
        # (sampled, replies): client 3 never replies in round 1 (timeout).
        (
            [0, 1, 2, 3],
            [
                _error(100, CLIENT_FAILURE, crash),
                _error(101, SIMULATED_DROPOUT, "x"),
                _answer(2, rng),
            ],
        ),
        (
            [0, 1, 2],
            [_error(100, CLIENT_FAILURE, "node 0: later"), _answer(1, rng), _answer(2, rng)],
        ),
    ]
    for rnd, (sampled, replies) in enumerate(rounds, start=1):
        _open_round(strategy, rnd, sampled)
        strategy.aggregate_train(rnd, replies)
    if sampling == "poisson":
        assert strategy.failing_clients() == {} and strategy.failures == {}  # who is secret
        return
    # Client 1's simulated dropout does not count; client 2 answered; 0 and 3 never did.
    assert strategy.failing_clients() == {
        "0": {"rounds": 2, "reason": crash},
        "3": {"rounds": 1, "reason": "no reply within runtime.round_timeout"},
    }


def test_attacks_change_predictions_as_documented():
    rng = np.random.default_rng(0)
    honest = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], np.float32)
    assert np.array_equal(attacks.attack(honest, "constant", rng).argmax(1), [1, 0])
    assert np.allclose(attacks.attack(honest, "flip", rng), np.roll(honest, 1, axis=1))
    assert np.allclose(attacks.attack(honest, "scale", rng, 10.0), honest * 10)
    rnd = attacks.attack(honest, "random", rng)
    assert np.allclose(rnd.sum(1), 1.0) and not np.allclose(rnd, honest)


def test_adversaries_and_dropouts_are_seeded_fractions():
    assert len(attacks.adversaries(20, 0.2, seed=1)) == 4
    assert attacks.adversaries(20, 0.2, seed=1) == attacks.adversaries(20, 0.2, seed=1)
    drops = [attacks.drops_out(3, r, c, 0.3) for r in range(50) for c in range(20)]
    assert 0.25 < np.mean(drops) < 0.35
    assert not any(attacks.drops_out(3, r, 0, 0.0) for r in range(50))


def test_dropouts_release_nothing_and_the_run_completes(tmp_path):
    from fedkd.simulations.runner import simulate

    cfg = from_dict(
        {
            "rounds": 3,
            "clients": {"num_clients": 5, "local_epochs": 1},
            "distill": {"epochs": 1, "proxy_per_round": 30},
            "privacy": {"mechanisms": ["dpsgd"], "dpsgd": {"noise_multiplier": 1.0}, "delta": 1e-3},
            "faults": {"dropout": 0.4},
            "runtime": {"backend": "inprocess"},
        }
    )
    summary = simulate(cfg, tmp_path / "run")
    import json

    rows = json.loads((tmp_path / "run" / "metrics.json").read_text())["rounds"]
    ledger = json.loads((tmp_path / "run" / "ledger.json").read_text())
    assert summary["rounds_completed"] == 3
    dropped = sum(r["dropped"] for r in rows)
    answered = sum(r["clients"] for r in rows)
    assert dropped > 0 and answered + dropped == 15
    # The server charges each sampled client's planned DP-SGD steps when the message goes
    # out, before it knows whether the client will answer: one entry per sent client-round,
    # dropped ones included (the ledger can only over-count), and nothing beyond the plan.
    from fedkd.privacy.client import steps_per_round

    assert len(ledger["releases"]) == answered + dropped
    assert all(r["steps"] == steps_per_round(cfg, r["population"]) for r in ledger["releases"])
    per_round = {r["round"] for r in ledger["releases"]}
    assert per_round == {1, 2, 3}


def test_a_reply_array_that_is_not_numpy_is_dropped_not_raised(caplog):
    # Prepare: a payload of the right size in a serialisation that is not NumPy's.
    strategy = _strategy("vote")
    record = _open_round(strategy, 1, sorted(NODES))
    bad = _reply(100, get_codec("vote").encode(_valid(np.random.default_rng(0))), None)
    raw = Array(dtype="uint8", shape=(6,), stype="torch.raw", data=b"\0" * 6)
    bad.content["predictions"] = ArrayRecord({"index": raw})
    bad.content["metrics"] = MetricRecord({"client-id": 0, "num-examples": 10})
    caplog.set_level(logging.WARNING, logger="fedkd.server.strategy")

    # Execute: no exception may escape.
    teacher, _ = strategy.aggregate_train(1, [bad])

    # Assert
    assert teacher is None and record.dropped == 1
    assert any("does not load" in r.getMessage() for r in caplog.records)


def test_a_second_reply_or_one_from_a_client_not_asked_is_dropped():
    # Prepare: clients 0 and 1 asked; client 0 replies twice, client 2 was not asked.
    strategy = _strategy("fp32")
    record = _open_round(strategy, 1, [0, 1])
    rng = np.random.default_rng(0)

    def reply(cid: int) -> Message:
        arrays = get_codec("fp32").encode(_valid(rng))
        return _reply(NODES[cid], arrays, {"client-id": cid, "num-examples": 10})

    # Execute
    strategy.aggregate_train(1, [reply(0), reply(0), reply(1), reply(2)])

    # Assert: one reply each from clients 0 and 1, the rest dropped with their reasons.
    assert [r.client_id for r in record.replies] == [0, 1]
    assert record.dropped == 2
    assert record.outcome[0] == "reply dropped: a second reply from client-id 0 this round"
    assert record.outcome[2] == "reply dropped: client-id 2 was not asked this round"
