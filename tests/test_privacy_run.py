"""Privacy end to end: reported ε comes from the ledger; budgets stop runs; replies stay small."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fedkd.simulations.cli import main
from fedkd.simulations.preflight import preflight
from fedkd.simulations.privacy_report import privacy_table
from fedkd.simulations.runner import simulate
from independent_accounting import replace_one_epsilon

from fedkd.config import ConfigError, from_dict
from fedkd.privacy.accounting import epsilon
from fedkd.privacy.ledger import PrivacyLedger

SMALL = {
    "rounds": 3,
    "clients": {"num_clients": 4, "local_epochs": 1},
    "distill": {"epochs": 1, "proxy_per_round": 40},
    "runtime": {"backend": "inprocess"},
}


def _rows(run):
    return json.loads((run / "metrics.json").read_text())["rounds"]


def test_dpsgd_epsilon_reported_equals_ledger_recomputation(tmp_path):
    cfg = from_dict(
        SMALL,
        ["privacy.mechanisms=[dpsgd]", "privacy.dpsgd.target_epsilon=4.0", "privacy.delta=1e-3"],
    )
    summary = simulate(cfg, tmp_path / "r")
    ledger = PrivacyLedger.load(tmp_path / "r" / "ledger.json")
    per_client = {s: epsilon(ledger.for_subject(s), 1e-3) for s in ledger.subjects()}
    assert len(per_client) == 4
    assert summary["epsilon_example"] == pytest.approx(max(per_client.values()), rel=1e-9)
    assert _rows(tmp_path / "r")[-1]["epsilon_example"] == pytest.approx(summary["epsilon_example"])
    # Calibrated once for the whole run: the final ε meets the target without exceeding it.
    assert 3.0 < summary["epsilon_example"] <= 4.0 + 0.05
    # ε is cumulative: it grows round by round.
    eps = [r["epsilon_example"] for r in _rows(tmp_path / "r")]
    assert eps == sorted(eps) and eps[0] < eps[-1]
    # Every release is replace-one (dataset sizes are published) and not seeded; the worst
    # client's ε equals an independent dp_accounting PLD of its (σ, q, total steps).
    assert all(r.relation == "replace_one" and not r.seeded for r in ledger.releases)
    worst = max(per_client, key=per_client.get)
    history = ledger.for_subject(worst)
    assert len({(r.noise_multiplier, r.sample_rate) for r in history}) == 1
    independent = replace_one_epsilon(
        history[0].noise_multiplier, history[0].sample_rate, sum(r.steps for r in history), 1e-3
    )
    assert summary["epsilon_example"] == pytest.approx(independent, rel=1e-9)
    table = privacy_table(tmp_path / "r")
    assert table[0]["scope"] == "example"
    assert (table[0]["accountant"], table[0]["relation"]) == ("pld", "replace_one")
    assert table[0]["eps"] == pytest.approx(summary["epsilon_example"])
    assert table[0]["eps_rdp"] is None  # RDP has no replace-one bound with q < 1


def test_gaussian_budget_stops_the_run_cleanly_and_keeps_results(tmp_path, capsys):
    sets = [
        "privacy.mechanisms=[gaussian]",
        "privacy.gaussian.noise_multiplier=1.0",
        "privacy.max_epsilon=12",
        "rounds=10",
        "privacy.delta=1e-3",
    ]
    cfg = from_dict(SMALL, sets)
    summary = simulate(cfg, tmp_path / "g")
    rows = _rows(tmp_path / "g")
    assert summary["stopped"].startswith(f"privacy budget reached at round {len(rows) + 1}")
    assert 1 <= len(rows) < 10
    assert rows[-1]["epsilon_client"] <= 12
    ledger = PrivacyLedger.load(tmp_path / "g" / "ledger.json")
    assert len(ledger) == len(rows)
    assert epsilon(ledger.releases, 1e-3) == pytest.approx(rows[-1]["epsilon_client"])
    # No sampling: replace-one is one Gaussian per round with shift 2/σ, which RDP also
    # accounts (as add/remove with σ/2); PLD is the tighter of the two.
    assert rows[-1]["epsilon_client"] <= epsilon(ledger.releases, 1e-3, "rdp")


def test_pate_votes_travel_as_one_bit_and_unanswered_rows_are_not_distilled(tmp_path):
    sets = [
        "privacy.mechanisms=[pate]",
        # σ = 8 keeps ε moderate (about 10): at σ = 0.5 ε is in the hundreds and each
        # round's PLD over that range took a minute, for nothing this test checks.
        "privacy.pate.sigma=8",
        "privacy.pate.threshold=3.5",
        "privacy.pate.sigma_threshold=8",
        "privacy.delta=1e-3",
    ]
    simulate(from_dict(SMALL, sets), tmp_path / "p")
    rows = _rows(tmp_path / "p")
    per_client = [v for r in rows for v in r["bytes_up_per_client"].values()]
    assert max(per_client) < 40 * 10 / 8 + 400  # packed votes plus record overhead
    assert all(0 <= r["answered"] <= 40 for r in rows)
    ledger = PrivacyLedger.load(tmp_path / "p" / "ledger.json")
    # Confident-GNMax is charged GNMax noise on every checked query, answered or not (the
    # number answered is data-dependent), and every query is checked: one release a round.
    assert len(ledger) == len(rows)
    assert all(r.steps == 40 and r.threshold_checks == 40 for r in ledger.releases)


def test_delta_not_below_one_over_n_is_refused_at_start(tmp_path, capsys):
    cfg = from_dict(
        SMALL,
        ["privacy.mechanisms=[dpsgd]", "privacy.dpsgd.noise_multiplier=1.0", "privacy.delta=0.1"],
    )
    with pytest.raises(ConfigError, match=r"privacy.delta.*1/N"):
        preflight(cfg)


def test_privacy_command_prints_the_table(tmp_path, capsys):
    cfg = from_dict(
        SMALL,
        [
            "privacy.mechanisms=[dpsgd, gaussian]",
            "privacy.dpsgd.noise_multiplier=1.0",
            "privacy.gaussian.noise_multiplier=2.0",
            "rounds=2",
            "privacy.delta=1e-3",
        ],
    )
    simulate(cfg, tmp_path / "both")
    capsys.readouterr()
    assert main(["privacy", str(tmp_path / "both")]) == 0
    out = capsys.readouterr().out
    assert "example" in out and "client" in out and "dpsgd" in out and "gaussian" in out
    assert main(["privacy", str(tmp_path / "nothing")]) == 2


def test_dp_reply_holds_only_predictions_and_metrics(tmp_path):
    import json as _json

    from fedkd.client.app import app
    from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict

    from fedkd.config import to_dict

    cfg = from_dict(
        SMALL,
        ["privacy.mechanisms=[dpsgd]", "privacy.dpsgd.noise_multiplier=1.0", "privacy.delta=1e-3"],
    )
    from fedkd.clientdata import client_data
    from fedkd.privacy.client import steps_per_round

    # The server charges the round's planned DP-SGD steps and says so in the message.
    n = len(client_data(cfg.data, cfg.seed, cfg.clients.num_clients, 0).y_private)
    planned = steps_per_round(cfg, n)
    msg = Message(
        RecordDict(
            {
                "config": ConfigRecord(
                    {
                        "server-round": 1,
                        "fedkd-config": _json.dumps(to_dict(cfg)),
                        "dpsgd-planned-steps": planned,
                    }
                ),
                "proxy": ArrayRecord({"idx": Array(np.arange(40, dtype=np.int32))}),
            }
        ),
        dst_node_id=1,
        message_type="train",
    )
    ctx = Context(
        run_id=1,
        node_id=1,
        node_config={"partition-id": 0, "num-partitions": 4},
        state=RecordDict(),
        run_config={},
    )
    reply = app(msg, ctx)
    assert not reply.has_error()
    assert set(reply.content.array_records) == {"predictions"}
    assert set(reply.content.metric_records) == {"metrics"}
    assert not reply.content.config_records
    assert [a.numpy().shape for a in reply.content["predictions"].values()] == [(40, 10)]
    assert reply.content["metrics"]["dpsgd-epsilon"] > 0
    assert reply.content["metrics"]["dpsgd-steps"] == planned
    # No statistic of the private data itself (training loss, accuracy on the private set)
    # leaves a DP client: only its size, public-data figures and the DP-SGD bookkeeping.
    assert set(reply.content["metrics"]) == {
        "client-id",
        "num-examples",
        "digest-loss",
        "dpsgd-epsilon",
        "dpsgd-steps",
        "dpsgd-steps-total",
        "dpsgd-noise",
        "dpsgd-sample-rate",
        "dpsgd-population",
        "dpsgd-frozen",
    }
