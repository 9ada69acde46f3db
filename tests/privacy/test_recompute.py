"""Printed ε = an independent recompute from ledger.json with dp_accounting, on every path.

(Equal to 1e-6: the discretised PLD of one k-fold event and of k events differ in the 8th
digit.) The recompute below reads only the ledger's fields and writes its own reduction of each
mechanism to Gaussian events (it never calls fedkd's accounting code), so a wrong formula
in fedkd, a release missing from the ledger, or a metric computed from something other
than the ledger fails here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from dp_accounting import dp_event
from dp_accounting.pld import PLDAccountant
from dp_accounting.privacy_accountant import NeighboringRelation
from fedkd.simulations.runner import simulate

from fedkd.config import from_dict

BASE = {
    "rounds": 3,
    "clients": {"num_clients": 10, "models": ["linear"], "local_epochs": 1},
    "distill": {"student": "linear", "epochs": 2, "proxy_per_round": 40, "codec": "fp16"},
    "runtime": {"backend": "inprocess"},
}
PATHS = {
    "dpsgd": [
        "privacy.mechanisms=[dpsgd]",
        "privacy.dpsgd.noise_multiplier=1.3",
        "clients.batch_size=16",
    ],
    "gaussian-poisson": [
        "privacy.mechanisms=[gaussian]",
        "clients.sampling=poisson",
        "clients.sample_rate=0.6",
        "privacy.gaussian.noise_multiplier=3",
    ],
    "pate-poisson": [
        "privacy.mechanisms=[pate]",
        "clients.sampling=poisson",
        "clients.sample_rate=0.3",
        "privacy.pate.sigma=40",
    ],
    "confident-gnmax": [
        "privacy.mechanisms=[pate]",
        "privacy.pate.sigma=40",
        "privacy.pate.threshold=6",
        "privacy.pate.sigma_threshold=30",
    ],
}


def _independent_event(r: dict) -> tuple[dp_event.DpEvent, str]:
    """One ledger entry as a dp_accounting event, from its fields alone."""
    q = r["sample_rate"]
    if r["mechanism"] in ("dpsgd", "gaussian"):
        z, count = r["noise_multiplier"], r["steps"]
    else:  # PATE: the round's queries share one sample -> one Gaussian on all statistics
        a, c = r["steps"], r["threshold_checks"]
        s1 = r["sigma_threshold"] or 1.0
        if q < 1:  # per-teacher norm bound (one-hot vote per query, max count moves <= 1)
            inv = a / r["noise_multiplier"] ** 2 + c / s1**2
        else:  # exact replace-one sensitivity: sqrt(2) per vote, 1 per max count
            inv = (2 * a / r["noise_multiplier"] ** 2 + c / s1**2) / 4
        z, count = 1 / math.sqrt(inv), 1
    event = dp_event.GaussianDpEvent(z)
    if q < 1:
        event = dp_event.PoissonSampledDpEvent(q, event)
    return dp_event.SelfComposedDpEvent(event, count), r["relation"]


def _recompute(releases: list[dict], delta: float) -> float:
    relation = {r["relation"] for r in releases}
    assert relation == {"replace_one"}
    acc = PLDAccountant(
        neighboring_relation=NeighboringRelation.REPLACE_ONE, value_discretization_interval=1e-4
    )
    acc.compose(dp_event.ComposedDpEvent([_independent_event(r)[0] for r in releases]))
    return acc.get_epsilon(delta)


class _Runs(dict):
    """Run directory of each path, simulated the first time a test asks for it (a test
    worker then runs only the paths of the tests it was given)."""

    def __init__(self, tmp_path_factory) -> None:
        super().__init__()
        self._tmp = tmp_path_factory

    def __missing__(self, name: str) -> Path:
        path = self._tmp.mktemp(name)
        simulate(from_dict(BASE, PATHS[name]), path)
        self[name] = path
        return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    return _Runs(tmp_path_factory)


@pytest.mark.parametrize("name", list(PATHS))
def test_printed_epsilon_equals_an_independent_dp_accounting_recompute(runs, name):
    # Prepare
    run = runs[name]
    ledger = json.loads((run / "ledger.json").read_text())["releases"]
    last = json.loads((run / "metrics.json").read_text())["rounds"][-1]
    done = json.loads((run / "DONE").read_text())
    # Execute
    if name == "dpsgd":
        subjects = {r["subject"] for r in ledger}
        assert len(subjects) == 10  # every client charged
        expected = max(_recompute([r for r in ledger if r["subject"] == s], 1e-5) for s in subjects)
        printed = [last["epsilon_example"], done["epsilon_example"]]
    else:
        assert len(ledger) == 3  # one release per round, even a round nobody joined
        expected = _recompute(ledger, 1e-5)
        printed = [last["epsilon_client"], done["epsilon_client"]]
    # Assert
    assert expected > 0
    assert printed == [pytest.approx(expected, rel=1e-6)] * 2


def test_pate_with_client_sampling_is_charged_once_per_round_not_per_query(runs):
    # The per-query charge (each query as if independently subsampled) under-reports.
    ledger = json.loads((runs["pate-poisson"] / "ledger.json").read_text())["releases"]
    per_query = []
    for r in ledger:
        z = r["noise_multiplier"]  # one query: per-teacher norm 1
        e = dp_event.PoissonSampledDpEvent(r["sample_rate"], dp_event.GaussianDpEvent(z))
        per_query.append(dp_event.SelfComposedDpEvent(e, r["steps"]))
    acc = PLDAccountant(neighboring_relation=NeighboringRelation.REPLACE_ONE)
    acc.compose(dp_event.ComposedDpEvent(per_query))
    assert _recompute(ledger, 1e-5) > acc.get_epsilon(1e-5)


def test_confident_gnmax_charges_every_checked_query(runs):
    ledger = json.loads((runs["confident-gnmax"] / "ledger.json").read_text())["releases"]
    assert all(r["steps"] == r["threshold_checks"] == 40 for r in ledger)


def test_fedkd_privacy_prints_the_enforced_epsilon_relation_and_parameters(runs, capsys):
    from fedkd.simulations.cli import main

    assert main(["privacy", str(runs["dpsgd"])]) == 0
    out = capsys.readouterr().out
    last = json.loads((runs["dpsgd"] / "metrics.json").read_text())["rounds"][-1]
    assert f"ε = {last['epsilon_example']:.4f} by PLD (enforced)" in out
    assert "replace_one neighbours" in out
    assert "σ 1.3" in out and "of 10 clients" in out
