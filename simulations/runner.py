"""Run a fedkd config on Flower's simulation runtime (Ray) or in-process."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fedkd.config import Config, refuse_central_only
from fedkd.rundir import RunDir, prepare

logger = logging.getLogger(__name__)

OFFLINE_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "HF_HUB_OFFLINE": "1",
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
    "RAY_DEDUP_LOGS": "0",
    "OMP_NUM_THREADS": "1",
}


def set_offline_env() -> None:
    """Environment every fedkd process needs offline (Ray workers inherit it)."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)


def simulate(cfg: Config, out: str | Path, *, resume: bool = False) -> dict[str, Any]:
    """Run ``cfg`` into run directory ``out``; returns the run summary.

    ``runtime.backend: ray`` uses Flower's simulation runtime (Ray actors as clients,
    started and shut down here, nothing left running); ``inprocess`` calls the same
    ClientApp in this process (tests and sweeps).
    """
    refuse_central_only(cfg, "fedkd")
    set_offline_env()
    run = prepare(out, cfg, resume=resume)
    if resume and run.is_done():  # nothing left to run: its DONE stays as it was
        logger.info("%s already finished; nothing to resume", run.path)
        return run.read_done()
    state_dir = str(run.path / "clients")
    with device_floor(cfg):
        if cfg.runtime.backend == "inprocess":
            return _simulate_inprocess(cfg, run, state_dir)
        return _simulate_ray(cfg, run, state_dir)


@contextlib.contextmanager
def device_floor(cfg: Config) -> Iterator[None]:
    """Hand the config's ``device`` section to the simulated clients, for this run only.

    It travels through the process environment (Ray workers inherit it), never through the
    server's messages, whose copy of the section the clients ignore.
    """
    from fedkd.config import to_dict
    from fedkd.privacy.policy import ENV_VAR

    old = os.environ.get(ENV_VAR)
    os.environ[ENV_VAR] = json.dumps(to_dict(cfg)["device"])
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(ENV_VAR, None)
        else:
            os.environ[ENV_VAR] = old


def _simulate_inprocess(cfg: Config, run: RunDir, state_dir: str) -> dict[str, Any]:
    import torch

    from client.app import app as client_app
    from server.runner import serve
    from simulations.localgrid import LocalGrid

    torch.set_num_threads(1)
    grid = LocalGrid(client_app, cfg.clients.num_clients)
    return serve(grid, cfg, run, state_dir=state_dir)


def _simulate_ray(cfg: Config, run: RunDir, state_dir: str) -> dict[str, Any]:
    from flwr.simulation import run_simulation

    from client.app import app as client_app
    from server.app import make_server_app

    backend_config = {
        "client_resources": {"num_cpus": cfg.runtime.cpus_per_client, "num_gpus": 0.0},
        "init_args": {
            "num_cpus": cfg.runtime.total_cpus,
            "include_dashboard": False,
            "logging_level": "warning",
            "log_to_driver": True,
        },
    }
    level = logging.getLogger("flwr").level
    stop = threading.Event()  # set on Ctrl-C: Flower's ServerApp thread then ends too
    try:
        run_simulation(
            server_app=make_server_app(cfg, run, state_dir=state_dir, stop=stop),
            client_app=client_app,
            num_supernodes=cfg.clients.num_clients,
            backend_name="ray",
            backend_config=backend_config,
            verbose_logging=level <= logging.DEBUG,
        )
    except BaseException:
        stop.set()
        raise
    logging.getLogger("flwr").setLevel(level)  # run_simulation resets Flower's log level
    done = run.path / "DONE"
    if not done.exists():
        raise RuntimeError(f"the simulation ended without finishing {run.path}; see the log above")
    return json.loads(done.read_text())
