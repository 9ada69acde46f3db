"""``privacy.dpsgd.relation: add_remove`` is for the central-dpsgd baseline only. fedkd's
own runs account under replace-one, so every entry point that serves a fedkd run refuses
the key, the ServerApp under ``flwr run`` and deployments included (not only
``fedkd simulate``)."""

from __future__ import annotations

import pytest

from fedkd.config import ConfigError, from_dict
from fedkd.rundir import prepare

BASE = {
    "rounds": 1,
    "clients": {"num_clients": 3, "models": ["linear"], "local_epochs": 1, "batch_size": 64},
    "distill": {"student": "linear", "epochs": 1, "proxy_per_round": 30},
    "privacy": {
        "mechanisms": ["dpsgd"],
        "dpsgd": {"noise_multiplier": 1.0, "relation": "add_remove"},
        "delta": 1e-3,
    },
    "runtime": {"backend": "inprocess"},
}


def test_the_server_app_refuses_add_remove_accounting_without_the_simulate_front_end(tmp_path):
    # serve() is what the ServerApp runs under `flwr run` and in deployments.
    from fedkd.client.app import app as client_app
    from fedkd.server.runner import serve
    from fedkd.simulations.localgrid import LocalGrid

    cfg = from_dict(BASE)
    run = prepare(tmp_path / "run", cfg, resume=False)
    with pytest.raises(ConfigError, match=r"privacy\.dpsgd\.relation"):
        serve(LocalGrid(client_app, 3), cfg, run)
    assert not (tmp_path / "run" / "ledger.json").exists()  # nothing trained or released
