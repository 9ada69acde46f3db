"""Shared test setup: offline Flower, one torch thread, Message task identity."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Flower starts its helpers (flower-superexec, flwr-serverapp...) by name: make the
# interpreter's own bin folder come first on PATH, even when the venv is not activated.
os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])

for _key, _value in {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "HF_HUB_OFFLINE": "1",
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
    "OMP_NUM_THREADS": "1",
}.items():
    os.environ.setdefault(_key, _value)

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _task_identity():
    """Flower's ``Message`` needs a task identity outside a runtime."""
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    yield


#: pytest-xdist groups (the README's test command runs two workers, one per core). Each
#: group runs one test at a time on one worker: no two Ray clusters ever start at once, and
#: no two Flower deployments (SuperLink + SuperNodes) compete for ports and heartbeats. A
#: Ray test and a deployment test may overlap: the deployment mostly waits on polls. The
#: files with expensive module-scoped runs (export, flat inputs, recompute) keep their tests
#: on one worker, so that run is made once.
XDIST_GROUPS = {
    "ray": ("test_flwr_run.py", "test_ctrl_c.py"),
    "deploy": ("deploy/",),
    "export": ("test_export.py",),
    "flat-inputs": ("test_flat_inputs.py",),
    "recompute": ("privacy/test_recompute.py",),
}


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        rel = Path(item.fspath).relative_to(here).as_posix()
        for group, prefixes in XDIST_GROUPS.items():
            if rel.startswith(prefixes) or (group == "ray" and item.get_closest_marker("ray")):
                item.add_marker(pytest.mark.xdist_group(group))
