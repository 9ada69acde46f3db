"""Adding a mechanism is one class plus one registry line, and a run then uses it end to end.

The test-only mechanism ``test-votes`` has a client step (each client sends one-hot votes)
and a server release (the vote shares of the first half of the round's rows). It charges
nothing: it is a plumbing check, not a privacy mechanism. Its report counts its releases
and whether every reply it saw was one-hot, so its effect shows in ``metrics.json``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedkd.config import ConfigError, from_dict
from fedkd.mechanisms import (
    Mechanism,
    TeacherRelease,
    mechanism_names,
    register_mechanism,
    unregister_mechanism,
)
from fedkd.mechanisms.client import encode_reply, privatize

NAME = "test-votes"


class VoteShares(Mechanism):
    """Clients vote one-hot; the server answers the first half of the rows with vote shares."""

    releases_teacher = True

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.releases = 0
        self.all_one_hot = True

    @classmethod
    def privatize(cls, cfg, probs: np.ndarray) -> np.ndarray:
        votes = np.zeros_like(probs)
        votes[np.arange(len(probs)), probs.argmax(1)] = 1.0
        return votes

    def release(self, server_round, preds, weights, num_clients) -> TeacherRelease:
        self.releases += 1
        self.all_one_hot &= bool(np.all(preds.sum(-1) == 1) and np.all(preds.max(-1) == 1))
        rows = np.arange(preds.shape[1] // 2)
        return TeacherRelease(rows=rows, teacher=preds[:, rows].mean(0).astype(np.float32))

    def report(self) -> dict[str, float]:
        return {"test_releases": self.releases, "test_one_hot": float(self.all_one_hot)}


@pytest.fixture
def registered():
    register_mechanism(NAME)(VoteShares)  # the one registry line
    yield
    unregister_mechanism(NAME)


def _cfg(**privacy):
    return from_dict(
        {
            "rounds": 2,
            "clients": {"num_clients": 3, "local_epochs": 1, "digest_epochs": 0},
            "distill": {"epochs": 1, "proxy_per_round": 30, "codec": "fp16"},
            "privacy": {"mechanisms": [NAME], **privacy},
            "runtime": {"backend": "inprocess"},
        }
    )


def test_config_accepts_a_registered_mechanism_only_while_registered(registered):
    assert NAME in mechanism_names()
    assert NAME in _cfg().privacy.mechanisms
    unregister_mechanism(NAME)
    with pytest.raises(ConfigError, match="privacy.mechanisms: unknown mechanism 'test-votes'"):
        _cfg()


def test_its_client_step_runs_before_the_codec(registered):
    cfg = _cfg()
    probs = np.array([[0.2, 0.7, 0.1], [0.5, 0.3, 0.2]], np.float32)
    assert np.array_equal(privatize(cfg, probs), [[0, 1, 0], [1, 0, 0]])
    assert np.array_equal(encode_reply(cfg, probs)["probs"], [[0, 1, 0], [1, 0, 0]])


def test_a_registered_mechanism_runs_end_to_end(registered, tmp_path):
    from fedkd.simulations.runner import simulate

    summary = simulate(_cfg(), tmp_path / "run")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    rows = metrics["rounds"]
    assert summary["rounds_completed"] == 2 and summary["test_releases"] == 2
    assert [r["test_releases"] for r in rows] == [1, 2]
    assert all(r["test_one_hot"] == 1.0 for r in rows)  # the client step ran on every reply
    assert all(r["answered"] == 15 and r["clients"] == 3 for r in rows)  # its release was used
    ledger = json.loads((tmp_path / "run" / "ledger.json").read_text())
    assert metrics["ledger"] == "ledger.json" and ledger["releases"] == []
