"""A mechanism named twice in ``privacy.mechanisms`` runs, and is charged, once (before the
plug-in refactor the names were a set; now each name builds an instance)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from fedkd.config import ConfigError, from_dict
from fedkd.mechanisms import CentralMechanism

BASE = {
    "clients": {"num_clients": 4, "batch_size": 64},
    "privacy": {"mechanisms": ["dpsgd"], "dpsgd": {"noise_multiplier": 1.0}, "delta": 1e-3},
}


def test_a_mechanism_listed_twice_is_refused_in_one_line():
    with pytest.raises(ConfigError, match="privacy.mechanisms"):
        from_dict(BASE, ["privacy.mechanisms=[dpsgd,dpsgd]"])


def test_a_mechanism_listed_twice_charges_each_round_once():
    cfg = from_dict(BASE)
    twice = replace(cfg, privacy=replace(cfg.privacy, mechanisms=("dpsgd", "dpsgd")))
    charges = []
    for c in (cfg, twice):
        mech = CentralMechanism(c, num_examples=400, num_proxy=100)
        mech.sizes = {cid: 100 for cid in range(4)}
        mech.on_send(1, [0, 1, 2, 3])
        charges.append(sum(r.steps for r in mech.ledger.releases))
    assert charges[1] == charges[0] > 0
