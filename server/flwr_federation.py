"""``flwr run .`` helpers: the simulation's size, fedkd's log lines, the local SuperLink.

``flwr run .`` (Flower >= 1.32) submits the run to a local SuperLink that it starts once and
leaves running, and simulates 2 SuperNodes unless told otherwise. fedkd needs one SuperNode
per client (``clients.num_clients``), so the README's command passes
``--federation-config "num-supernodes=N"``; a simulation with fewer SuperNodes fails at once
with :class:`FederationSizeError` (one line naming that option), not after a round timeout.

``python -m fedkd.server.flwr_federation stop`` stops the local SuperLink that ``flwr run`` started
under ``$FLWR_HOME`` (default ``~/.flwr``) and the Flower processes it launched (Linux: reads
``/proc``).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

logger = logging.getLogger(__name__)

SIM_NODES_WAIT = 10.0  # seconds a simulated ServerApp waits for its SuperNodes to register
SIM_NODES_SETTLE = 1.0  # a node count unchanged this long is final (registered in one loop)
#: ``flwr run .`` loads server/ and client/ from the app directory as top-level ``server``
#: and ``client`` (pyproject's app components), so their loggers carry those names there.
FEDKD_LOGGERS = ("fedkd", "server", "client")
FLOWER_PROCESSES = ("flower-superlink", "flower-superexec", "flwr-serverapp", "flwr-simulation")
_HANDLER_FLAG = "_fedkd_flwr_run"


class FederationSizeError(RuntimeError):
    """A simulation with fewer SuperNodes than ``clients.num_clients``."""


def is_simulation(grid: object) -> bool:
    """Whether ``grid`` is Flower's in-memory simulation grid (not a deployment's)."""
    try:
        from flwr.superlink.grid.inmemory_grid import InMemoryGrid
    except ImportError:  # pragma: no cover - internal path of Flower 1.42
        return False
    return isinstance(grid, InMemoryGrid)


def fix_command(num_clients: int) -> str:
    """The ``flwr run`` command whose simulation has ``num_clients`` SuperNodes."""
    return f'flwr run . --federation-config "num-supernodes={num_clients}" --stream'


def check_simulation_size(
    count_nodes: Callable[[], int],
    want: int,
    wait: float = SIM_NODES_WAIT,
    settle: float = SIM_NODES_SETTLE,
    poll: float = 0.1,
) -> int:
    """Wait until ``want`` simulated SuperNodes are registered, or fail fast.

    Flower registers every simulated SuperNode in one loop right after starting the
    ServerApp, so a count that has stopped changing for ``settle`` seconds is final.

    Parameters
    ----------
    count_nodes : callable
        Returns the number of SuperNodes registered now.
    want : int
        ``clients.num_clients``.
    wait : float
        Longest wait in seconds.
    settle : float
        Seconds a non-zero count must stay unchanged to be taken as final.
    poll : float
        Seconds between counts.

    Returns
    -------
    int
        The number of SuperNodes (at least ``want``).

    Raises
    ------
    FederationSizeError
        Fewer than ``want`` SuperNodes after the count settled or ``wait`` ran out.
    """
    deadline = time.monotonic() + wait
    count, since = count_nodes(), time.monotonic()
    while count < want:
        now = time.monotonic()
        if now > deadline or (count > 0 and now - since >= settle):
            raise FederationSizeError(
                f"this simulation has {count} SuperNodes but clients.num_clients={want} "
                f"needs one per client: run `{fix_command(want)}`"
            )
        time.sleep(poll)
        new = count_nodes()
        if new != count:
            count, since = new, time.monotonic()
    return count


def log_to_stderr() -> None:
    """Show fedkd's INFO lines in the ServerApp's output (what ``flwr run --stream`` and
    ``flwr log`` print); Flower configures only its own ``flwr`` logger. Idempotent."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)-8s: fedkd %(message)s"))
    setattr(handler, _HANDLER_FLAG, True)
    for name in FEDKD_LOGGERS:
        log = logging.getLogger(name)
        log.setLevel(logging.INFO)
        for old in [h for h in log.handlers if getattr(h, _HANDLER_FLAG, False)]:
            log.removeHandler(old)
        log.addHandler(handler)
        log.propagate = False


# -- the local SuperLink ----------------------------------------------------------------------
def flwr_home() -> Path:
    """``$FLWR_HOME`` or ``~/.flwr``, as Flower resolves it."""
    return Path(os.environ.get("FLWR_HOME") or Path.home() / ".flwr").expanduser()


def _proc_table() -> dict[int, tuple[int, list[str]]]:
    """pid -> (parent pid, argv) for every readable process in ``/proc``."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        table[int(entry.name)] = (ppid, [a for a in argv if a])
    return table


def _is_flower(argv: Iterable[str]) -> bool:
    return any(Path(a).name in FLOWER_PROCESSES for a in list(argv)[:2])


def local_superlink_pids(home: Path | None = None) -> list[int]:
    """The local SuperLink that ``flwr run`` started under ``home`` and the Flower processes
    below it (``flower-superexec``, ``flwr-serverapp``, ``flwr-simulation``), parents first."""
    marker = str((home or flwr_home()) / "local-superlink")
    table = _proc_table()
    roots = [
        pid
        for pid, (_, argv) in table.items()
        if any(Path(a).name == "flower-superlink" for a in argv[:2]) and marker in " ".join(argv)
    ]
    found, todo = [], list(roots)
    while todo:
        pid = todo.pop(0)
        found.append(pid)
        todo += [c for c, (ppid, argv) in table.items() if ppid == pid and _is_flower(argv)]
    return found


def stop_local_superlink(home: Path | None = None, timeout: float = 10.0) -> list[int]:
    """SIGTERM the local SuperLink under ``home`` and its Flower processes; SIGKILL what is
    left after ``timeout`` seconds. Returns the pids that were signalled."""
    pids = local_superlink_pids(home)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [p for p in alive if Path(f"/proc/{p}").exists() and not _is_zombie(p)]
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def main(argv: list[str] | None = None) -> int:
    """``python -m fedkd.server.flwr_federation stop``: stop the local SuperLink (module doc)."""
    parser = argparse.ArgumentParser(prog="python -m fedkd.server.flwr_federation")
    parser.add_argument("action", choices=["stop"])
    parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    pids = stop_local_superlink()
    if pids:
        logger.info("stopped the local SuperLink under %s (pids %s)", flwr_home(), pids)
    else:
        logger.info("no local SuperLink running under %s", flwr_home())
    return 0


if __name__ == "__main__":
    sys.exit(main())
