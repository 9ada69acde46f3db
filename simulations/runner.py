"""Run a fedkd config on Flower's simulation runtime (Ray) or in-process."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fedkd.simulations.central_only import refuse_central_only

from fedkd.config import Config
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
    from fedkd.client.app import app as client_app
    from fedkd.server.runner import serve
    from fedkd.simulations.localgrid import LocalGrid

    torch.set_num_threads(1)
    grid = LocalGrid(client_app, cfg.clients.num_clients)
    return serve(grid, cfg, run, state_dir=state_dir)


def _simulate_ray(cfg: Config, run: RunDir, state_dir: str) -> dict[str, Any]:
    from fedkd.client.app import app as client_app
    from fedkd.server.app import make_server_app
    from fedkd.server.grid import RunStoppedError
    from flwr.simulation import run_simulation

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
    verbose = level <= logging.DEBUG
    stop = threading.Event()  # set on Ctrl-C: Flower's ServerApp thread then ends too
    try:
        with _first_sigint_stops(stop), _quiet_flower(verbose):
            run_simulation(
                server_app=make_server_app(cfg, run, state_dir=state_dir, stop=stop),
                client_app=client_app,
                num_supernodes=cfg.clients.num_clients,
                backend_name="ray",
                backend_config=backend_config,
                verbose_logging=verbose,
            )
    except RunStoppedError:
        if not stop.is_set():
            raise
    except BaseException:
        stop.set()
        raise
    logging.getLogger("flwr").setLevel(level)  # run_simulation resets Flower's log level
    done = run.path / "DONE"
    if done.exists():  # finished, even where a Ctrl-C came after the last round
        return json.loads(done.read_text())
    if stop.is_set():  # Ctrl-C: the clients and Ray have been shut down in order
        raise KeyboardInterrupt
    raise RuntimeError(f"the simulation ended without finishing {run.path}; see the log above")


@contextlib.contextmanager
def _first_sigint_stops(stop: threading.Event) -> Iterator[None]:
    """While Flower's simulation runs, the first Ctrl-C sets ``stop`` instead of raising.

    A ``KeyboardInterrupt`` in the main thread makes Flower shut Ray down while its worker
    threads still wait on the actors, and each of them then logs an ``ActorDiedError``
    traceback. Setting ``stop`` instead ends the ServerApp at its next wait for replies;
    Flower then lets the actors finish their current message and shuts Ray down in order
    (Ray's own processes block SIGINT, so the actors are still alive). A second Ctrl-C
    raises ``KeyboardInterrupt`` at once. Nothing changes outside the main thread or where
    SIGINT is ignored (a background job).
    """
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return

    def on_sigint(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        logger.warning("interrupted: stopping the clients (Ctrl-C again to quit at once)")

    signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


RUN_SIMULATION_NOTICE = "The `run_simulation` function is deprecated"


class RunSimulationNoticeFilter(logging.Filter):
    """Drops Flower's multi-line notice that ``run_simulation`` is deprecated.

    ``flwr.simulation.run_simulation`` logs it on every call. fedkd calls it on the user's
    behalf (``flwr run`` needs a packaged app and a SuperLink, not an in-memory ServerApp),
    so the notice is no action for the user. Any other record passes.
    """

    def filter(self, record: logging.LogRecord) -> bool:  # noqa: D102 - logging API
        args = record.args if isinstance(record.args, tuple) else ()
        return not (
            str(record.msg).startswith("DEPRECATED FEATURE")
            and bool(args)
            and str(args[0]).startswith(RUN_SIMULATION_NOTICE)
        )


@contextlib.contextmanager
def _quiet_flower(verbose: bool) -> Iterator[None]:
    """Unless ``verbose``: no run_simulation notice, and Flower in the Ray workers logs errors only.

    The notice is filtered from the ``flwr`` logger for the call. The workers (the client
    actors) get ``FLWR_LOG_LEVEL=ERROR`` through the environment they inherit at
    ``ray.init``: their Flower warnings (e.g. ``Manually terminating ClientAppActor`` when
    a run is stopped) are no action for the user; a client's failure still reaches the
    server as an error reply. A ``FLWR_LOG_LEVEL`` the user set is left alone.
    """
    if verbose:
        yield
        return
    notice_filter = RunSimulationNoticeFilter()
    flwr_logger = logging.getLogger("flwr")
    flwr_logger.addFilter(notice_filter)
    own_level = "FLWR_LOG_LEVEL" not in os.environ
    if own_level:
        os.environ["FLWR_LOG_LEVEL"] = "ERROR"
    try:
        yield
    finally:
        flwr_logger.removeFilter(notice_filter)
        if own_level:
            os.environ.pop("FLWR_LOG_LEVEL", None)
