"""A configured client-level mechanism is never silently bypassed: when a registered
plug-in that also releases the teacher comes first, the run must not release the plug-in's
teacher while reporting the Gaussian mechanism's ε (0 for an empty history)."""

from __future__ import annotations

import numpy as np
import pytest

from fedkd.config import ConfigError, from_dict
from fedkd.mechanisms import (
    CentralMechanism,
    Mechanism,
    TeacherRelease,
    register_mechanism,
    unregister_mechanism,
)

NAME = "audit-plain-teacher"


class PlainTeacher(Mechanism):
    """A third-party teacher: the mean of the replies, nothing charged."""

    scope = "example"  # ordered before every client-level mechanism
    releases_teacher = True

    def release(self, server_round, preds, weights, num_clients) -> TeacherRelease:
        return TeacherRelease(rows=np.arange(preds.shape[1]), teacher=preds.mean(0))


@pytest.fixture
def registered():
    register_mechanism(NAME)(PlainTeacher)
    yield
    unregister_mechanism(NAME)


def test_two_mechanisms_that_release_the_teacher_are_refused(registered):
    cfg = from_dict({"clients": {"num_clients": 50}, "privacy": {"mechanisms": [NAME, "gaussian"]}})
    with pytest.raises(ConfigError, match="privacy.mechanisms"):
        mech = CentralMechanism(cfg, num_examples=1000, num_proxy=20)
        # What happens without the refusal: the raw mean is released, ε_client = 0.
        preds = np.full((3, 20, 4), 0.25, np.float32)
        mech.release(1, preds, np.ones(3), 50)
        assert not (len(mech.ledger) == 0 and mech.epsilons()["epsilon_client"] == 0.0)
