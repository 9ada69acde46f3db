"""The ClientApp replies with encoded predictions and metrics only: never weights."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import numpy as np
from fedkd.client.app import app
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict

from fedkd import protocol as proto
from fedkd.clientdata import splits_for
from fedkd.config import from_dict, to_dict
from fedkd.models import build_model


def _context(pid: int) -> Context:
    return Context(
        run_id=1,
        node_id=500 + pid,
        node_config={"partition-id": pid, "num-partitions": 3},
        state=RecordDict(),
        run_config={},
    )


def _train_message(cfg, idx: np.ndarray, server_round: int = 1) -> Message:
    return Message(
        RecordDict(
            {
                proto.CONFIG: ConfigRecord(
                    {proto.ROUND: server_round, proto.RUN_CONFIG: json.dumps(to_dict(cfg))}
                ),
                proto.PROXY: ArrayRecord({"idx": Array(idx.astype(np.int32))}),
            }
        ),
        dst_node_id=500,
        message_type=proto.TRAIN,
    )


def test_reply_holds_only_predictions_of_proxy_shape_and_metrics():
    # Prepare
    cfg = from_dict(
        {"clients": {"num_clients": 3, "local_epochs": 1}, "distill": {"codec": "fp32"}}
    )
    idx = np.arange(0, 40, 3)
    # Execute
    reply = app(_train_message(cfg, idx), _context(0))
    # Assert: one ArrayRecord with one (M, C) array, one MetricRecord, nothing else.
    assert not reply.has_error()
    content = reply.content
    assert set(content.array_records) == {proto.PREDICTIONS}
    assert set(content.metric_records) == {proto.METRICS}
    assert not content.config_records
    arrays = content[proto.PREDICTIONS]
    assert list(arrays) == ["probs"]
    probs = arrays["probs"].numpy()
    assert probs.shape == (len(idx), 10)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    # No array in the reply is as large as any model's weights.
    splits = splits_for(cfg.data, cfg.seed)
    weights = sum(
        p.numel() for p in build_model("mlp", splits.input_shape, 10, seed=0).parameters()
    )
    assert probs.size < weights
    assert content[proto.METRICS][proto.NUM_EXAMPLES] > 0


def test_client_state_persists_across_rounds():
    cfg = from_dict({"clients": {"num_clients": 3, "local_epochs": 1}})
    ctx = _context(1)
    idx = np.arange(20)
    first = app(_train_message(cfg, idx, 1), ctx).content[proto.PREDICTIONS]["probs"].numpy()
    assert "fedkd-client" in ctx.state
    second = app(_train_message(cfg, idx, 2), ctx).content[proto.PREDICTIONS]["probs"].numpy()
    fresh = (
        app(_train_message(cfg, idx, 2), _context(1)).content[proto.PREDICTIONS]["probs"].numpy()
    )
    # Round 2 from the kept state differs from round 2 on a fresh client.
    assert not np.allclose(second, fresh)
    assert not np.allclose(first, second)


def test_bad_partition_gives_an_error_reply_naming_the_node():
    cfg = from_dict({"clients": {"num_clients": 3}})
    reply = app(_train_message(cfg, np.arange(5)), _context(7))
    assert reply.has_error()
    assert "node 7" in reply.error.reason and "partition-id 7" in reply.error.reason


def test_an_unexpected_failure_reaches_the_server_without_its_text(monkeypatch):
    # Prepare: a failure whose message carries a fact of the private data.
    import fedkd.client.app as client_app

    def boom(*args, **kwargs):
        raise RuntimeError("private label 7 at row 12")

    monkeypatch.setattr(client_app, "local_round", boom)
    cfg = from_dict({"clients": {"num_clients": 3}})
    # Execute
    reply = app(_train_message(cfg, np.arange(10)), _context(0))
    # Assert
    assert reply.has_error() and reply.error.code == client_app.CLIENT_FAILURE
    assert "private" not in reply.error.reason and "device's own log" in reply.error.reason


def test_a_reply_that_fails_to_encode_reaches_the_server_without_its_text(monkeypatch):
    # Prepare: predictions that are not finite, which the codec refuses.
    import fedkd.client.app as client_app

    from fedkd.local import local_round

    def nan_round(*args, **kwargs):
        result = local_round(*args, **kwargs)
        return replace(result, probs=np.full_like(result.probs, np.nan))

    monkeypatch.setattr(client_app, "local_round", nan_round)
    cfg = from_dict({"clients": {"num_clients": 3, "local_epochs": 1}})
    # Execute
    reply = app(_train_message(cfg, np.arange(10)), _context(0))
    # Assert: a generic error reply, not a traceback or the codec's words.
    assert reply.has_error() and reply.error.code == client_app.CLIENT_FAILURE
    assert "finite" not in reply.error.reason and "device's own log" in reply.error.reason


def test_teacher_labels_that_are_not_probabilities_are_refused_before_training():
    import fedkd.client.app as client_app

    cfg = from_dict({"clients": {"num_clients": 3, "local_epochs": 1}})
    idx = np.arange(4)
    for probs in (
        np.full((4, 10), 2e10, np.float32),  # huge: would steer the digest anywhere
        np.full((4, 10), np.nan, np.float32),
        -np.full((4, 10), 0.1, np.float32),
        np.full((3, 10), 0.1, np.float32),  # a row short
    ):
        msg = _train_message(cfg, np.arange(10), server_round=2)
        msg.content[proto.TEACHER] = ArrayRecord({"idx": Array(idx), "probs": Array(probs)})
        reply = app(msg, _context(0))
        assert reply.has_error() and reply.error.code == client_app.USER_ERROR
        assert "teacher labels are not probabilities" in reply.error.reason
    good = np.full((4, 10), 0.1, np.float32)
    msg = _train_message(cfg, np.arange(10), server_round=2)
    msg.content[proto.TEACHER] = ArrayRecord({"idx": Array(idx), "probs": Array(good)})
    assert not app(msg, _context(0)).has_error()


def test_indices_and_labels_that_name_no_proxy_row_or_class_are_refused_naming_the_record():
    import fedkd.client.app as client_app

    cfg = from_dict({"clients": {"num_clients": 3, "local_epochs": 1}})
    rows = len(splits_for(cfg.data, cfg.seed).x_proxy)
    good = np.full((4, 10), 0.1, np.float32)
    for idx, probs, words in (
        (np.array([0, 1, 2, rows]), good, f"teacher indices must lie in \\[0, {rows}\\)"),
        (np.array([-1, 1, 2, 3]), good, "teacher indices must lie in"),
        (np.array([0.0, 1.5, 2.0, 3.0]), good, "teacher indices must be a 1-D array of integers"),
        (np.arange(4).reshape(2, 2), good, "teacher indices must be a 1-D array of integers"),
        (np.arange(4), np.full((4, 5), 0.2, np.float32), "teacher labels have 5 classes"),
    ):
        msg = _train_message(cfg, np.arange(10), server_round=2)
        msg.content[proto.TEACHER] = ArrayRecord({"idx": Array(idx), "probs": Array(probs)})
        reply = app(msg, _context(0))
        assert reply.has_error() and reply.error.code == client_app.USER_ERROR
        assert re.search(words, reply.error.reason), reply.error.reason
    reply = app(_train_message(cfg, np.array([0, rows])), _context(0))
    assert reply.has_error() and "proxy indices must lie in" in reply.error.reason
