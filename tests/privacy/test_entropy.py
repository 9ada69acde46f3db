"""Privacy draws come from the OS, not from `seed`: nobody holding the config can redo them."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from fedkd.simulations.runner import simulate

from fedkd import protocol as proto
from fedkd.clientdata import client_data
from fedkd.compress import get_codec
from fedkd.config import from_dict
from fedkd.local import RoundTask, local_round

SMALL = {
    "rounds": 2,
    "clients": {"num_clients": 4, "models": ["linear"], "local_epochs": 1, "batch_size": 64},
    "distill": {"student": "linear", "epochs": 2, "proxy_per_round": 30, "codec": "int8"},
    "runtime": {"backend": "inprocess"},
}
DPSGD = ["privacy.mechanisms=[dpsgd]", "privacy.dpsgd.noise_multiplier=1.0"]


def _run(tmp_path, name, overrides=()):
    out = tmp_path / name
    simulate(from_dict(SMALL, list(overrides)), out)
    return json.loads((out / "metrics.json").read_text())["rounds"], out


def _fingerprint(rows):
    return [(r["student_accuracy"], r["student_loss"], r["teacher_accuracy"]) for r in rows]


def test_two_dp_runs_with_one_seed_differ_and_two_non_private_runs_are_identical(tmp_path):
    # Execute
    plain_a, _ = _run(tmp_path, "plain-a")
    plain_b, _ = _run(tmp_path, "plain-b")
    dp_a, _ = _run(tmp_path, "dp-a", DPSGD)
    dp_b, _ = _run(tmp_path, "dp-b", DPSGD)
    # Assert
    assert _fingerprint(plain_a) == _fingerprint(plain_b)
    assert _fingerprint(dp_a) != _fingerprint(dp_b)
    assert [r["epsilon_example"] for r in dp_a] == [r["epsilon_example"] for r in dp_b]


def test_the_insecure_switch_repeats_the_noise_and_every_output_says_it_is_no_guarantee(
    tmp_path, capsys
):
    from fedkd.simulations.cli import main

    from fedkd.privacy.entropy import INSECURE_NOTE

    seeded = [*DPSGD, "privacy.insecure_seeded_noise=true"]
    a, out = _run(tmp_path, "seeded-a", seeded)
    b, _ = _run(tmp_path, "seeded-b", seeded)
    assert _fingerprint(a) == _fingerprint(b)
    assert all(r["epsilon_guarantee"] is False for r in a)
    ledger = json.loads((out / "ledger.json").read_text())["releases"]
    assert ledger and all(r["seeded"] for r in ledger)
    assert json.loads((out / "DONE").read_text())["epsilon_guarantee"] is False
    main(["privacy", str(out)])
    assert INSECURE_NOTE in capsys.readouterr().out


def _payload(cfg, data, task):
    from fedkd.privacy.client import steps_per_round

    task = dataclasses.replace(task, dpsgd_steps=steps_per_round(cfg, len(data.y_private)))
    result = local_round(cfg, data, 3, task, None)
    return get_codec("int8").encode(result.probs)


def test_an_adversary_with_the_seed_and_all_but_one_example_cannot_replay_the_payload():
    """The audit's attack: rerun the shipped local round + codec with the public seed on
    both neighbouring data sets and compare with the real payload byte for byte."""
    cfg = from_dict(SMALL, [*DPSGD, "privacy.dpsgd.noise_multiplier=0.8"])
    full = client_data(cfg.data, cfg.seed, cfg.clients.num_clients, 3)
    without = dataclasses.replace(full, x_private=full.x_private[1:], y_private=full.y_private[1:])
    task = RoundTask(server_round=1, proxy_idx=np.arange(30), dpsgd_steps=None)
    seeded = from_dict(SMALL, [*DPSGD, "privacy.insecure_seeded_noise=true"])

    def matches(cfg_real, cfg_adv, data):
        real = _payload(cfg_real, data, task)
        replay = _payload(cfg_adv, data, task)
        return all(np.array_equal(real[k], replay[k]) for k in real)

    # Seeded (the old behaviour): the replay matches, membership is decided every time.
    assert matches(seeded, seeded, full) and matches(seeded, seeded, without)
    # OS entropy: no replay matches, so the exact-match test carries no information.
    hits = sum(matches(cfg, cfg, data) for data in (full, without) for _ in range(5))
    assert hits == 0


def test_poisson_client_sampling_does_not_follow_the_seed():
    from fedkd.privacy.entropy import numpy_rng

    ids = list(range(200))
    draws = [
        tuple(
            proto.sample_clients(
                ids, "poisson", rate=0.5, size=0, seed=7, server_round=1, rng=numpy_rng()
            )
        )
        for _ in range(2)
    ]
    assert draws[0] != draws[1]
    with pytest.raises(ValueError, match="OS-seeded rng"):
        proto.sample_clients(ids, "poisson", rate=0.5, size=0, seed=7, server_round=1)
