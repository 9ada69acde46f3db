"""A device enforces its own privacy floor: weaker requests are refused, nothing trained."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from fedkd.client.app import POLICY_REFUSAL, app
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict

from fedkd import protocol as proto
from fedkd.config import ConfigError, DevicePolicy, from_dict, to_dict
from fedkd.privacy.policy import (
    ENV_VAR,
    PolicyError,
    check_request,
    policy_from_node_config,
)

DPSGD = {
    "clients": {"num_clients": 3, "local_epochs": 1, "batch_size": 2048},
    "privacy": {"mechanisms": ["dpsgd"], "dpsgd": {"noise_multiplier": 2.0}},
    "rounds": 4,
}


def _context(node_config: dict, state: RecordDict | None = None) -> Context:
    return Context(
        run_id=1,
        node_id=500,
        node_config={"partition-id": 0, "num-partitions": 3, **node_config},
        state=state if state is not None else RecordDict(),
        run_config={},
    )


def _message(cfg, rows: int = 20, server_round: int = 1) -> Message:
    items = {proto.ROUND: server_round, proto.RUN_CONFIG: json.dumps(to_dict(cfg))}
    if "dpsgd" in cfg.privacy.mechanisms:
        items[proto.DPSGD_STEPS] = 1
    return Message(
        RecordDict(
            {
                proto.CONFIG: ConfigRecord(items),
                proto.PROXY: ArrayRecord({"idx": Array(np.arange(rows, dtype=np.int32))}),
            }
        ),
        dst_node_id=500,
        message_type=proto.TRAIN,
    )


@pytest.mark.parametrize(
    ("policy", "override", "key"),
    [
        (
            DevicePolicy(require_mechanisms=("dpsgd",)),
            ["privacy.mechanisms=[]"],
            "require_mechanisms",
        ),
        (DevicePolicy(min_noise_multiplier=3.0), [], "min_noise_multiplier = 3.0"),
        (DevicePolicy(max_clip_norm=0.5), [], "max_clip_norm = 0.5"),
        (DevicePolicy(max_delta=1e-6), [], "max_delta = 1e-06"),
        (DevicePolicy(max_epsilon=0.5, max_delta=1e-5), [], "max_epsilon = 0.5"),
        (DevicePolicy(), ["privacy.insecure_seeded_noise=true"], "allow_insecure_noise"),
    ],
)
def test_a_request_weaker_than_the_floor_is_refused_naming_the_key_and_device_value(
    policy, override, key
):
    # Prepare
    cfg = from_dict(DPSGD, override)
    dpsgd = None if not cfg.privacy.mechanisms else (2.0, 4.0)
    # Execute / Assert
    with pytest.raises(PolicyError, match=key.replace("[", r"\[")):
        check_request(policy, cfg, proxy_rows=20, dpsgd=dpsgd)


def test_a_request_within_the_floor_passes():
    cfg = from_dict(DPSGD)
    floor = DevicePolicy(("dpsgd",), 1.0, 10.0, 1.0, 1e-5, 50)
    check_request(floor, cfg, proxy_rows=20, dpsgd=(2.0, 4.0))  # no exception


def test_too_many_proxy_rows_are_refused():
    cfg = from_dict(DPSGD)
    with pytest.raises(PolicyError, match="max_proxy_rows = 10"):
        check_request(DevicePolicy(max_proxy_rows=10), cfg, proxy_rows=20, dpsgd=(2.0, 1.0))


def test_node_config_keys_build_the_floor_and_bad_values_are_one_line_errors():
    policy = policy_from_node_config(
        {"require-mechanisms": "dpsgd", "min-noise-multiplier": "1.5", "max-proxy-rows": 30}
    )
    assert policy == DevicePolicy(
        require_mechanisms=("dpsgd",), min_noise_multiplier=1.5, max_proxy_rows=30
    )
    assert policy_from_node_config({"partition-id": 0}) is None
    with pytest.raises(ConfigError, match="node config"):
        policy_from_node_config({"max-epsilon": "lots"})
    with pytest.raises(ConfigError, match="max_epsilon needs node config.max_delta"):
        policy_from_node_config({"max-epsilon": "3"})


def test_a_train_message_without_the_servers_dpsgd_charge_is_refused(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    msg = _message(from_dict(DPSGD))
    items = dict(msg.content[proto.CONFIG])
    del items[proto.DPSGD_STEPS]
    msg.content[proto.CONFIG] = ConfigRecord(items)
    reply = app(msg, _context({}))
    assert reply.has_error() and "dpsgd-planned-steps" in reply.error.reason


def test_the_client_app_refuses_a_non_private_request_and_trains_nothing(monkeypatch):
    # Prepare: the device requires dpsgd; the server asks for no privacy at all.
    monkeypatch.delenv(ENV_VAR, raising=False)
    cfg = from_dict(DPSGD, ["privacy.mechanisms=[]"])
    state = RecordDict()
    # Execute
    reply = app(_message(cfg), _context({"require-mechanisms": "dpsgd"}, state))
    # Assert: an error reply naming the key and the device's value; no state was written.
    assert reply.has_error()
    assert reply.error.code == POLICY_REFUSAL
    assert "require_mechanisms = ['dpsgd']" in reply.error.reason
    assert "privacy.mechanisms = []" in reply.error.reason
    assert len(state) == 0


def test_the_client_app_ignores_the_servers_copy_of_the_device_section(monkeypatch):
    # The server sends a permissive `device` section; the node's own floor still applies.
    monkeypatch.delenv(ENV_VAR, raising=False)
    cfg = from_dict(DPSGD, ["device.min_noise_multiplier=0.1"])
    reply = app(_message(cfg), _context({"min-noise-multiplier": "5.0"}))
    assert reply.has_error()
    assert "min_noise_multiplier = 5.0" in reply.error.reason


def test_a_simulated_device_reads_its_floor_from_the_environment_not_the_message(monkeypatch):
    monkeypatch.setenv(ENV_VAR, json.dumps({"min_noise_multiplier": 5.0}))
    reply = app(_message(from_dict(DPSGD)), _context({}))
    assert reply.has_error()
    assert "min_noise_multiplier = 5.0" in reply.error.reason


def test_a_device_freezes_at_its_own_epsilon_whatever_the_server_budget(monkeypatch):
    # Prepare: the floor's ε cap is between the run's ε after 1 and after 2 rounds.
    from fedkd.privacy.accounting import epsilon
    from fedkd.privacy.client import dpsgd_release, initial_state

    cfg = from_dict(DPSGD)
    monkeypatch.delenv(ENV_VAR, raising=False)
    state = RecordDict()
    ctx = _context({"max-epsilon": "100", "max-delta": "1e-5"}, state)
    first = app(_message(cfg, server_round=1), ctx)
    n = int(first.content[proto.METRICS][proto.NUM_EXAMPLES])
    plan = initial_state(cfg, n)
    eps1 = epsilon([dpsgd_release("c", 0, 1, plan, n, cfg)], cfg.privacy.delta)
    eps2 = epsilon([dpsgd_release("c", 0, 2, plan, n, cfg)], cfg.privacy.delta)
    cap = (eps1 + eps2) / 2
    ctx = _context({"max-epsilon": str(cap), "max-delta": "1e-5"}, state)
    # Execute: the run plans more than the cap, so a fresh request is refused...
    refused = app(_message(cfg, server_round=2), ctx)
    assert refused.has_error() and "max_epsilon" in refused.error.reason
    # ...and with a one-round plan the device trains once more at most, then freezes.
    short = from_dict(DPSGD, ["rounds=1"])
    second = app(_message(short, server_round=2), ctx)
    # Assert
    assert not second.has_error()
    metrics = second.content[proto.METRICS]
    assert metrics["dpsgd-frozen"] == 1.0 and metrics["dpsgd-steps"] == 0
    assert metrics["dpsgd-epsilon"] == pytest.approx(eps1)


def test_a_client_level_mechanism_on_few_clients_is_warned_about(caplog):
    from fedkd.privacy.checks import warn_few_clients

    warn_few_clients(from_dict({}, ["privacy.mechanisms=[gaussian]"]))
    warn_few_clients(from_dict({"clients": {"num_clients": 200}}, ["privacy.mechanisms=[pate]"]))
    warn_few_clients(
        from_dict({}, ["privacy.mechanisms=[dpsgd]", "privacy.dpsgd.noise_multiplier=1"])
    )
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "gaussian protects whole clients"
    ]


def test_fedkd_simulate_hands_the_device_section_to_its_clients(tmp_path, monkeypatch):
    # End to end in simulation: the floor requires dpsgd, the run asks for none; every
    # client refuses, nothing is trained, and the run stops after its failed rounds.
    from fedkd.simulations.runner import simulate

    monkeypatch.delenv(ENV_VAR, raising=False)
    cfg = from_dict(
        {
            "rounds": 3,
            "clients": {"num_clients": 3, "local_epochs": 1},
            "distill": {"epochs": 1},
            "runtime": {"backend": "inprocess", "max_failed_rounds": 2},
            "device": {"require_mechanisms": ["dpsgd"]},
        }
    )
    summary = simulate(cfg, tmp_path)
    rows = json.loads((tmp_path / "metrics.json").read_text())["rounds"]
    assert [(r["clients"], r["dropped"]) for r in rows] == [(0, 3), (0, 3)]
    assert "stopped before round 3" in (summary["stopped"] or "")
    assert not (tmp_path / "clients").exists() or not any((tmp_path / "clients").rglob("*.pt"))
    assert ENV_VAR not in os.environ  # handed over for the run only


def test_a_dpsgd_floor_key_implies_dpsgd_even_without_require_mechanisms(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    cfg = from_dict(DPSGD, ["privacy.mechanisms=[]"])
    reply = app(_message(cfg), _context({"min-noise-multiplier": "1.0"}))
    assert reply.has_error() and "min_noise_multiplier = set (needs dpsgd)" in reply.error.reason


def test_a_device_refuses_an_import_path_model_it_did_not_allow(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV_VAR, raising=False)
    cfg = from_dict(DPSGD, ["clients.models=[os:getcwd]"])
    ctx = _context({"client-id": 0, "data-path": str(tmp_path / "none.npz")})
    ctx.node_config.pop("partition-id")
    reply = app(_message(cfg), ctx)
    assert reply.has_error() and "allow-models" in reply.error.reason
    assert "getcwd()" not in reply.error.reason  # the model was never imported or called
