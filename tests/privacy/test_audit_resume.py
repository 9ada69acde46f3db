"""A server killed after a round's results were published but before its checkpoint was
committed must not forget that round's release on resume: the re-run draws fresh noise, so
the published (first) release and the re-run are two releases, and both must be charged."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from fedkd.server.record import RoundRecord
from fedkd.server.recorder import RunRecorder

from fedkd.config import from_dict
from fedkd.mechanisms import CentralMechanism
from fedkd.rundir import LEDGER, RunDir
from fedkd.teacher import TeacherCache

CLIENTS, ROWS, CLASSES = 50, 6, 3


class _Student:
    """What the recorder reads and restores of a student (a real one needs a dataset)."""

    def __init__(self) -> None:
        self.model = torch.nn.Linear(2, CLASSES)
        self.meta = {"name": "linear"}

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])


class _KilledError(Exception):
    """SIGKILL, as far as the recorder can tell."""


def _server(cfg, run: RunDir) -> tuple[CentralMechanism, RunRecorder]:
    mech = CentralMechanism(cfg, num_examples=1000, num_proxy=ROWS)
    cache = TeacherCache.empty(ROWS, CLASSES)
    return mech, RunRecorder(cfg, run, _Student(), cache, mech)


def _round(mech: CentralMechanism, rnd: int) -> RoundRecord:
    record = RoundRecord(
        round=rnd, idx=np.arange(ROWS), sampled=[0, 1], t0=0.0, secret=False,
        ledger_start=len(mech.ledger),
    )  # fmt: skip
    preds = np.full((2, ROWS, CLASSES), 1.0 / CLASSES, np.float32)
    record.release = mech.release(rnd, preds, np.ones(2), CLIENTS)
    record.epsilons = mech.epsilons()
    record.student_accuracy = 0.5
    return record


def _kill_at(monkeypatch, method: str) -> None:
    def killed(self, *args):
        raise _KilledError

    monkeypatch.setattr(RunDir, method, killed)


@pytest.mark.parametrize("kill_at", ["save_checkpoint", "write_student"])
@pytest.mark.parametrize("rounds_before", [0, 1])
def test_a_round_published_before_its_checkpoint_is_still_charged_after_resume(
    tmp_path, monkeypatch, rounds_before, kill_at
):
    # Prepare: a Gaussian run records `rounds_before` rounds, then is killed while committing
    # the next one, after its metrics row (and, for save_checkpoint, student.pt) was written.
    cfg = from_dict({"clients": {"num_clients": CLIENTS}, "privacy": {"mechanisms": ["gaussian"]}})
    run = RunDir(tmp_path)
    mech, recorder = _server(cfg, run)
    for rnd in range(1, rounds_before + 1):
        recorder(_round(mech, rnd))
    with monkeypatch.context() as patch:
        _kill_at(patch, kill_at)
        with pytest.raises(_KilledError):
            recorder(_round(mech, rounds_before + 1))
    published = json.loads((tmp_path / "metrics.json").read_text())["rounds"]
    assert len(published) == rounds_before + 1  # the killed round's results are out
    # Execute: a fresh server process resumes from the run directory.
    resumed, recorder2 = _server(cfg, run)
    recorder2.restore()
    # Assert: every round whose release left the server is in the ledger it continues with.
    assert len(resumed.ledger) >= len(published)
    on_disk = json.loads((tmp_path / LEDGER).read_text())["releases"]
    assert len(resumed.ledger) >= len(on_disk)
