"""SuperNode processes for fast deployment rounds on Flower 1.42.

Why naive deployment rounds take 16-38 s on the client side, and what this module does:

1. **A new ClientApp process per message.** A SuperNode's SuperExec starts
   ``flwr-clientapp`` for every message; it imports flwr, torch and scikit-learn and builds
   the first optimizer (about 5 s together). :func:`run_supernode` with ``warm=True`` runs
   the SuperNode with ``--isolation process`` and the warm executor of
   :mod:`fedkd.deploy.warm`.
2. **Polling.** A SuperNode sleeps 3 s whenever the SuperLink has no message for it
   (hard-coded in ``flwr.supernode.start_client_internal``) and its SuperExec polls every
   1 s (``FLWR_SUPEREXEC_TASK_POLL_INTERVAL``). :func:`run_supernode` shortens both. The
   ServerApp side polls through ``fedkd.server.grid.FastPollGrid``.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

logger = logging.getLogger(__name__)


class _ShortSleeps:
    """Stand-in for the ``time`` module of ``start_client_internal``: sleeps are capped."""

    def __init__(self, cap: float) -> None:
        self._cap = cap

    def sleep(self, seconds: float) -> None:
        time.sleep(min(seconds, self._cap))

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def shorten_supernode_polling(interval: float) -> None:
    """Make this process's SuperNode poll the SuperLink every ``interval`` s (not 3 s).

    Flower 1.42 hard-codes the SuperNode's idle sleep (3 s) and its wait for a reply
    (0.5 s); both live in ``flwr.supernode.start_client_internal``, whose ``time`` module
    is replaced by one with capped sleeps. Nothing else changes.
    """
    import flwr
    from flwr.supernode import start_client_internal as sci

    if not flwr.__version__.startswith("1.42."):
        logger.warning("polling patch written for flwr 1.42, found %s", flwr.__version__)
    sci.time = _ShortSleeps(interval)  # type: ignore[assignment]


def set_heartbeat_interval(seconds: float) -> None:
    """Heartbeat the SuperLink every ~``seconds`` instead of Flower's 30 s.

    The SuperLink holds a node online for 2 heartbeat intervals after its last heartbeat
    and refuses to activate an online node again (exit 305, ``[code: 2004]``): a crashed
    SuperNode can rejoin 20 s after its last heartbeat with 10 s, 60 s with Flower's
    default. The SuperLink accepts 10 s and more.
    """
    from flwr.supercore import heartbeat
    from flwr.supernode import fleet_http_connection

    if seconds < 10:
        from fedkd.config import ConfigError

        raise ConfigError(f"--heartbeat-interval must be >= 10 (SuperLink minimum), got {seconds}")
    fleet_http_connection.HEARTBEAT_DEFAULT_INTERVAL = seconds  # type: ignore[attr-defined]
    heartbeat.HEARTBEAT_DEFAULT_INTERVAL = seconds  # type: ignore[attr-defined]


def _flag(args: Sequence[str], name: str) -> str | None:
    """Value of ``--name value`` or ``--name=value`` in ``args`` (last one wins)."""
    value = None
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
    return value


def run_supernode(
    flower_args: Sequence[str],
    *,
    poll_interval: float,
    warm: bool,
    heartbeat_interval: float | None = None,
) -> int:
    """Run ``flower-supernode`` with ``flower_args`` in this process, for fast rounds.

    Parameters
    ----------
    flower_args : sequence of str
        Flags of ``flower-supernode`` (without ``--isolation``).
    poll_interval : float
        Seconds between polls of the SuperLink (and of the warm executor's task queue).
    warm : bool
        Run the SuperNode with ``--isolation process`` and a warm executor child
        (:func:`fedkd.deploy.warm.run_warm_executor`); otherwise Flower's own SuperExec,
        polling faster.
    heartbeat_interval : float, optional
        See :func:`set_heartbeat_interval`; None keeps Flower's 30 s.

    Returns
    -------
    int
        The SuperNode's exit status.
    """
    from flwr.supernode.cli.flower_supernode import flower_supernode

    from fedkd.config import ConfigError

    if not 0.01 <= poll_interval <= 3.0:
        raise ConfigError(f"--poll-interval must be in [0.01, 3], got {poll_interval}")
    if heartbeat_interval is not None and heartbeat_interval < 10:
        raise ConfigError(f"--heartbeat-interval must be >= 10, got {heartbeat_interval}")
    args = list(flower_args)
    shorten_supernode_polling(poll_interval)
    if heartbeat_interval is not None:
        set_heartbeat_interval(heartbeat_interval)
    executor: subprocess.Popen[bytes] | None = None
    if warm:
        args += ["--isolation", "process"]
        host = _flag(args, "--host") or "127.0.0.1"
        port = _flag(args, "--port") or "9094"
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"  # IPv6
        command = [
            sys.executable,
            "-c",
            "import sys; from fedkd.deploy.warm import warm_executor_main; "
            "sys.exit(warm_executor_main(sys.argv[1:]))",
            "--runtime-api-address",
            f"{host}:{port}",
            "--parent-pid",
            str(os.getpid()),
            "--poll-interval",
            str(poll_interval),
        ]
        ca = _flag(args, "--ssl-ca-certfile")
        command += ["--root-certificates", ca] if ca else ["--insecure"]
        executor = subprocess.Popen(command)  # stopped in the finally below
    else:
        os.environ["FLWR_SUPEREXEC_TASK_POLL_INTERVAL"] = str(poll_interval)
    saved = sys.argv
    sys.argv = ["flower-supernode", *args]
    try:
        flower_supernode()
        return 0
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else 1
    finally:
        sys.argv = saved
        if executor is not None:
            _stop(executor, timeout=5.0)


def _stop(proc: subprocess.Popen[Any], timeout: float) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` s; always reaped."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
