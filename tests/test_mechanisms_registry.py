"""The mechanism registry: names, lookup, refusal of clashes, and how a run's set is built."""

from __future__ import annotations

import numpy as np
import pytest

from fedkd.config import from_dict
from fedkd.mechanisms import (
    CentralMechanism,
    Mechanism,
    get_mechanism,
    mechanism_names,
    register_mechanism,
    unregister_mechanism,
)
from fedkd.mechanisms.client import codec_name, privatize
from fedkd.mechanisms.registry import mechanism_classes


def test_the_built_in_names_are_what_config_accepts():
    assert mechanism_names() == ("dpsgd", "gaussian", "pate")
    assert get_mechanism("pate").name == "pate"
    with pytest.raises(KeyError, match="unknown mechanism 'magic'; known: dpsgd, gaussian, pate"):
        get_mechanism("magic")


def test_a_name_cannot_be_taken_twice():
    class Other(Mechanism):
        pass

    with pytest.raises(ValueError, match="'pate' is already registered"):
        register_mechanism("pate")(Other)
    register_mechanism("test-other")(Other)
    try:
        with pytest.raises(ValueError, match="'test-other' is already registered"):
            register_mechanism("test-other")(type("Third", (Mechanism,), {}))
    finally:
        unregister_mechanism("test-other")
    assert "test-other" not in mechanism_names()


def test_a_run_gets_its_mechanisms_example_level_first_and_plain_aggregation_only_if_needed():
    names = [c.name for c in mechanism_classes(["gaussian", "dpsgd"])]
    assert names == ["dpsgd", "gaussian"]  # gaussian releases the teacher: no "none"
    assert [c.name for c in mechanism_classes(["dpsgd"])] == ["dpsgd", "none"]
    assert [c.name for c in mechanism_classes([])] == ["none"]


def test_pate_picks_the_codec_and_the_vote_on_the_client():
    cfg = from_dict({"privacy": {"mechanisms": ["pate"]}, "distill": {"codec": "int8"}})
    assert codec_name(cfg) == "vote"
    assert codec_name(from_dict({"distill": {"codec": "int8"}})) == "int8"
    probs = np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]], np.float32)
    assert np.array_equal(privatize(cfg, probs), [[0, 1, 0], [1, 0, 0]])


def test_a_pate_reply_decodes_to_exactly_the_one_hot_votes_in_log2_c_bits_a_row():
    from fedkd.compress import get_codec
    from fedkd.mechanisms.client import encode_reply

    cfg = from_dict({"privacy": {"mechanisms": ["pate"]}})
    probs = np.random.default_rng(0).dirichlet(np.ones(10), size=37).astype(np.float32)
    reply = encode_reply(cfg, probs)
    decoded = get_codec("vote").decode(reply, 37, 10)
    assert np.array_equal(decoded, privatize(cfg, probs))
    assert sum(a.nbytes for a in reply.values()) == -(-37 * 4 // 8)  # 4 bits for 10 classes
    onebit = get_codec("onebit").encode(privatize(cfg, probs))
    assert sum(a.nbytes for a in onebit.values()) > sum(a.nbytes for a in reply.values())
    probs[3, 2] = np.nan  # a diverged model fails as under any codec, it does not vote
    with pytest.raises(ValueError, match="finite"):
        encode_reply(cfg, probs)


def test_without_privacy_the_teacher_is_the_configured_aggregation_and_costs_nothing():
    from fedkd.aggregate import aggregate

    cfg = from_dict({"distill": {"aggregation": "mean_probs"}})
    mech = CentralMechanism(cfg, num_examples=100, num_proxy=20)
    preds = np.random.default_rng(0).dirichlet(np.ones(4), size=(3, 20)).astype(np.float32)
    out = mech.release(1, preds, np.ones(3), 3)
    assert np.array_equal(out.rows, np.arange(20)) and out.entries == ()
    assert np.allclose(out.teacher, aggregate("mean_probs", preds, np.ones(3)))
    assert len(mech.ledger) == 0 and mech.epsilons() == {}
