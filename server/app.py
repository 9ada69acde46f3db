"""The fedkd ServerApp for ``flwr run .`` (simulation or deployment).

The run config (``[tool.flwr.app.config]``, overridable with ``--run-config``) names a
fedkd YAML config, the run directory and optional ``--set`` style overrides separated by
``;``. ``fedkd simulate`` builds the same ServerApp in-process with :func:`make_server_app`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedkd.config import Config, load_config
from fedkd.rundir import RunDir, prepare
from server.runner import serve

logger = logging.getLogger(__name__)


def make_server_app(cfg: Config, run: RunDir, state_dir: str | None = None) -> ServerApp:
    """A ServerApp bound to a resolved config and a prepared run directory."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        torch.set_num_threads(1)
        serve(grid, cfg, run, state_dir=state_dir)

    return app


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Entry point for ``flwr run``: config path, out dir and overrides from the run config."""
    torch.set_num_threads(1)
    rc = context.run_config
    overrides = [s for s in str(rc.get("overrides", "")).split(";") if s.strip()]
    cfg = load_config(Path(str(rc["config"])), overrides)
    out = Path(str(rc["out-dir"]))
    run = prepare(out, cfg, resume=(out / "config.yaml").exists())
    serve(grid, cfg, run, state_dir=str(out / "clients"))
