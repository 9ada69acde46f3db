"""The server's ledger can only over-count, and publishes nothing the accountant hides."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from fedkd.simulations.runner import simulate

from fedkd.clientstate import StateDir
from fedkd.config import from_dict
from fedkd.privacy.dpsgd import DPSGDState, epsilon_of

BASE = {
    "rounds": 4,
    "clients": {"num_clients": 6, "models": ["linear"], "local_epochs": 1, "batch_size": 64},
    "distill": {"student": "linear", "epochs": 1, "proxy_per_round": 30, "codec": "int8"},
    "privacy": {"mechanisms": ["dpsgd"], "dpsgd": {"noise_multiplier": 1.0}},
    "runtime": {"backend": "inprocess"},
}


def test_trained_then_lost_replies_are_still_charged_so_the_ledger_covers_every_device(tmp_path):
    # Prepare: half of the replies are lost after the client trained and saved its state.
    cfg = from_dict(BASE, ["faults.lose_replies=0.5"])
    # Execute
    simulate(cfg, tmp_path)
    # Assert: for every device, the server charged at least the steps it took, and the
    # printed ε is at least every device's own ε.
    ledger = json.loads((tmp_path / "ledger.json").read_text())["releases"]
    rows = json.loads((tmp_path / "metrics.json").read_text())["rounds"]
    lost = 0
    for cid in range(6):
        state = StateDir(tmp_path / "clients" / f"client-{cid}").load_before(10**6)
        device = DPSGDState.from_dict(state.dpsgd)
        charged = sum(r["steps"] for r in ledger if r["subject"] == f"client-{cid}")
        assert charged >= device.steps > 0
        assert rows[-1]["epsilon_example"] >= epsilon_of(device, cfg.privacy.delta) - 1e-12
        lost += charged > device.steps
    dropped = sum(r["dropped"] for r in rows)
    assert dropped > 0  # the fault did fire: charged == trained there, lost replies included
    assert lost == 0  # a lost reply had trained: charge and device agree exactly


def test_a_client_the_server_did_not_charge_does_not_train(tmp_path):
    # Prepare: a budget below one round's ε: the server charges nothing and says so.
    cfg = from_dict(BASE, ["privacy.max_epsilon=0.01", "rounds=2"])
    # Execute
    simulate(cfg, tmp_path)
    # Assert
    ledger = json.loads((tmp_path / "ledger.json").read_text())["releases"]
    assert ledger == []
    state = StateDir(tmp_path / "clients" / "client-0").load_before(10**6)
    assert DPSGDState.from_dict(state.dpsgd).steps == 0


def test_poisson_client_sampling_publishes_no_participant_identity_or_count(tmp_path, caplog):
    cfg = from_dict(
        BASE,
        [
            "privacy.mechanisms=[gaussian]",
            "clients.sampling=poisson",
            "clients.sample_rate=1.0",  # every client sampled: the seeded dropouts then fire
            "faults.dropout=0.5",
            "rounds=3",
        ],
    )
    with caplog.at_level(logging.INFO):
        simulate(cfg, tmp_path)
    rows = json.loads((tmp_path / "metrics.json").read_text())["rounds"]
    assert all("bytes_up_per_client" not in r for r in rows)
    for key in ("clients", "dropped", "bytes_up", "bytes_down"):  # sample size secret too
        assert all(r[key] is None for r in rows)
    assert any("replied with an error" in m or "dropped" in m for m in caplog.messages) is False
    round_lines = [m for m in caplog.messages if m.startswith("round ") and "node" in m]
    assert round_lines == []


@pytest.mark.parametrize("sampling", ["all"])
def test_without_poisson_sampling_bytes_per_client_are_reported(tmp_path, sampling):
    cfg = from_dict(BASE, ["privacy.mechanisms=[]", "rounds=1", f"clients.sampling={sampling}"])
    simulate(cfg, tmp_path)
    rows = json.loads((tmp_path / "metrics.json").read_text())["rounds"]
    assert len(rows[0]["bytes_up_per_client"]) == 6
    assert np.isfinite(rows[0]["student_accuracy"])


def test_a_replayed_round_number_never_restores_an_older_accountant(tmp_path):
    # The audit's attack: after several rounds, ask for round 1 again.
    from fedkd.client.app import _restore
    from flwr.app import Context, RecordDict

    cfg = from_dict(BASE, ["rounds=3"])
    simulate(cfg, tmp_path)
    store = StateDir(tmp_path / "clients" / "client-0")
    newest = DPSGDState.from_dict(store.load_before(10**6).dpsgd)
    ctx = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})
    # Execute
    replay = _restore(ctx, store, 1)
    # Assert: a fresh model, but the accountant keeps every step it ever counted.
    assert replay.model == {}
    assert DPSGDState.from_dict(replay.dpsgd).steps == newest.steps > 0


def test_the_server_app_refuses_delta_not_below_one_over_n_without_the_cli_preflight(tmp_path):
    # simulate() skips fedkd simulate's preflight: the ServerApp itself must refuse, as it
    # does under `flwr run` and in deployments (after the handshake, with the real sizes).
    from fedkd.config import ConfigError

    cfg = from_dict(BASE, ["privacy.delta=0.05"])  # every client has more than 20 examples
    with pytest.raises(ConfigError, match=r"privacy.delta=0.05 must be < 1/N"):
        simulate(cfg, tmp_path)
    assert not (tmp_path / "ledger.json").exists()


def test_saving_under_a_lower_round_number_never_loses_the_largest_count(tmp_path):
    # The audit's attack: a server names very high rounds once, so that pruning by round
    # number deletes every later save; a restarted device must still see its true count.
    from fedkd.clientstate import ClientState

    store = StateDir(tmp_path)
    dp = DPSGDState(1.0, 1.0, 1.0, steps=0).to_dict()
    steps = 0
    for rnd in (10**6, 10**6 + 1, 10**6 + 2, 1, 2, 3):
        steps += 6
        store.save(ClientState(round=rnd, model={}, dpsgd={**dp, "steps": steps}))
    # Execute: a fresh process (no memory) reads the disk.
    restarted = StateDir(tmp_path).max_dpsgd()
    # Assert
    assert restarted["steps"] == 36
    assert sorted(p.name for p in tmp_path.glob("round-*.pt"))[-1] == "round-1000002.pt"


def test_under_poisson_sampling_every_client_is_charged_every_round(tmp_path):
    cfg = from_dict(
        BASE,
        [
            "privacy.mechanisms=[dpsgd,gaussian]",
            "clients.sampling=poisson",
            "clients.sample_rate=0.5",
            "rounds=3",
        ],
    )
    simulate(cfg, tmp_path)
    ledger = json.loads((tmp_path / "ledger.json").read_text())["releases"]
    charged = {(r["round"], r["subject"]) for r in ledger if r["mechanism"] == "dpsgd"}
    assert charged == {(rnd, f"client-{c}") for rnd in (1, 2, 3) for c in range(6)}
    rows = json.loads((tmp_path / "metrics.json").read_text())["rounds"]
    assert all(r["seconds"] is None for r in rows)
