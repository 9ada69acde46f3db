"""The fedkd ServerApp for ``flwr run .`` (simulation or deployment).

The run config (``[tool.flwr.app.config]``, overridable with ``--run-config``) names a
fedkd YAML config, the run directory and optional ``--set`` style overrides separated by
``;``. ``fedkd simulate`` builds the same ServerApp in-process with :func:`make_server_app`.
"""

from __future__ import annotations

import faulthandler
import logging
import signal
import threading
from pathlib import Path

import torch
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedkd.config import Config, load_config
from fedkd.rundir import RunDir, prepare

from .runner import serve

logger = logging.getLogger(__name__)


def make_server_app(
    cfg: Config,
    run: RunDir,
    state_dir: str | None = None,
    stop: threading.Event | None = None,
) -> ServerApp:
    """A ServerApp bound to a resolved config and a prepared run directory.

    Setting ``stop`` ends the ServerApp (:class:`~fedkd.server.grid.RunStoppedError`) at its
    next wait for client replies: Flower runs it in a non-daemon thread that would otherwise
    keep an interrupted simulation's process alive until the round timeouts ran out. With
    ``stop`` the grid is wrapped in ``FastPollGrid``, so replies are also polled every 0.1 s
    (``$FEDKD_GRID_POLL_SECONDS``) as in a deployment, not every 3 s.
    """
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        torch.set_num_threads(1)
        if stop is not None:
            from .grid import FastPollGrid

            grid = FastPollGrid(grid, stop=stop)
        serve(grid, cfg, run, state_dir=state_dir)

    return app


app = ServerApp()

APP_DIR = Path(__file__).resolve().parent.parent  # the app (installed FAB) directory


def app_path(value: str) -> Path:
    """A run-config path: relative paths that do not exist from the working directory are
    resolved against the app directory (``flwr run`` runs the ServerApp from the installed
    FAB, whose working directory is the SuperLink's)."""
    path = Path(value).expanduser()
    if not path.is_absolute() and not path.exists():
        path = APP_DIR / path
    return path


STACKS = "serverapp-stacks.txt"  # where SIGUSR1 makes the ServerApp write its stacks
_STACKS_FILE: list = []  # keeps the file open for faulthandler


def _dump_stacks_on_sigusr1(path: Path) -> None:
    """``kill -USR1 <flwr-serverapp pid>`` appends every thread's Python stack to ``path``
    (for diagnosing a stalled run); nothing else changes."""
    handle = open(path, "a")  # noqa: SIM115 - must outlive this call
    _STACKS_FILE.append(handle)
    faulthandler.register(signal.SIGUSR1, file=handle, all_threads=True)


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Entry point for ``flwr run``: config path, out dir and overrides from the run config.

    fedkd's progress lines go to the ServerApp's output (``flwr run --stream``, ``flwr log``),
    ending with the results folder. In a simulation with fewer SuperNodes than
    ``clients.num_clients`` it fails within seconds with one line naming the
    ``--federation-config`` to pass (:mod:`fedkd.server.flwr_federation`), before any file is
    written.
    """
    from .flwr_federation import (
        FederationSizeError,
        check_simulation_size,
        is_simulation,
        log_to_stderr,
    )

    torch.set_num_threads(1)
    log_to_stderr()
    rc = context.run_config
    overrides = [s for s in str(rc.get("overrides", "")).split(";") if s.strip()]
    cfg = load_config(app_path(str(rc["config"])), overrides)
    if is_simulation(grid):
        try:
            check_simulation_size(lambda: len(list(grid.get_node_ids())), cfg.clients.num_clients)
        except FederationSizeError as err:
            logger.error("%s", err)  # one line ahead of Flower's traceback
            raise
    out = Path(str(rc["out-dir"])).resolve()
    resume = (out / "config.yaml").exists()
    run = prepare(out, cfg, resume=resume)
    logger.info(
        "%s %s: %d clients, %d rounds; results in %s",
        "resuming" if resume else "starting",
        rc["config"],
        cfg.clients.num_clients,
        cfg.rounds,
        out,
    )
    _dump_stacks_on_sigusr1(out / STACKS)
    from .grid import FastPollGrid  # replies polled every 0.1 s, not 3 s

    summary = serve(FastPollGrid(grid), cfg, run, state_dir=str(out / "clients"))
    logger.info(
        "final student accuracy %.4f after %d rounds (%.1f s); results in %s",
        summary["student_accuracy"],
        summary["rounds_completed"],
        summary["seconds"],
        out,
    )
