"""Processes of a fedkd deployment on Flower 1.42: fast rounds, and local clusters.

Why naive deployment rounds take 16-38 s, and what this module does about each cause:

1. **A new ClientApp process per message.** A SuperNode's SuperExec starts
   ``flwr-clientapp`` for every message; it imports flwr, torch and scikit-learn and builds
   the first optimizer, which imports ``torch._dynamo`` (about 5 s together). Flower 1.42
   has no long-lived ClientApp process (its warm executor pools are for Kubernetes and
   agent/model/connector tasks only). :func:`run_warm_executor` is a SuperExec for
   ``flower-supernode --isolation process``: a ``multiprocessing`` fork server imports the
   heavy libraries once, and each task runs Flower's own ``run_clientapp`` in a fresh
   child forked from it. The app's own modules are *not* preloaded, so every message
   still runs the code of the run's FAB, exactly as ``flwr-clientapp`` would.
2. **Polling.** A SuperNode sleeps 3 s whenever the SuperLink has no message for it
   (hard-coded in ``flwr.supernode.start_client_internal``), its SuperExec polls every 1 s
   (``FLWR_SUPEREXEC_TASK_POLL_INTERVAL``), and the ServerApp's ``Grid.send_and_receive``
   polls for replies every 3 s. :func:`run_supernode` shortens the SuperNode's sleeps,
   the warm executor polls at the same interval, and :class:`FastPollGrid` (used by the
   ServerApp) polls replies every 0.1 s.
3. **A reply whose content never arrives.** A SuperNode pushes a reply's message first
   and its objects (the arrays) after. If it crashes in between, the SuperLink lists the
   reply, and Flower's ``pull_messages`` retries the missing objects with back-off for up
   to 2 hours (``PULL_MAX_TIME``), ignoring the round timeout: the run stalls.
   :class:`FastPollGrid` bounds those retries by the time left in the round, after which
   Flower turns the reply into an error reply and the round goes on without that node.

The second half of the module starts and stops local clusters (SuperLink + SuperNodes on
127.0.0.1) for the tests and the benchmark.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flwr.app import Message
from flwr.serverapp import Grid

logger = logging.getLogger(__name__)

GRID_POLL_SECONDS = 0.1
GRID_POLL_ENV = "FEDKD_GRID_POLL_SECONDS"  # override (e.g. 3 to measure Flower's default)
# Imported once by the warm executor's fork server. Never the app's own packages: each
# task must import them from the run's FAB, as flwr-clientapp does.
WARM_PRELOAD = (
    "numpy",
    "torch",
    "torch._dynamo",
    "torch.optim",
    "yaml",
    "sklearn.datasets",
    "sklearn.model_selection",
    "flwr.app",
    "flwr.clientapp",
    "flwr.supernode.runtime.run_clientapp",
)
OPTIONAL_PRELOAD = ("opacus", "flwr_datasets")  # flwr_datasets: ~3 s (partitioners)


# ----------------------------------------------------------------------------- ServerApp


class RunStoppedError(RuntimeError):
    """The run was stopped (Ctrl-C) while the ServerApp waited for replies."""


class FastPollGrid(Grid):
    """A Grid that polls for replies every ``interval`` seconds instead of 3 s.

    The interval defaults to 0.1 s or ``$FEDKD_GRID_POLL_SECONDS``. With a ``stop`` event,
    waiting for replies raises :class:`RunStoppedError` once it is set, so that a ServerApp thread
    ends soon after its simulation is interrupted instead of waiting out the round timeout.
    Everything else is delegated to the Grid Flower hands the ServerApp.
    """

    def __init__(
        self, grid: Grid, interval: float | None = None, stop: threading.Event | None = None
    ) -> None:
        self._grid = grid
        if interval is None:
            interval = float(os.environ.get(GRID_POLL_ENV, GRID_POLL_SECONDS))
        self._interval = interval
        self._stop = stop

    def set_run(self, run: Any) -> None:  # noqa: D102 - Grid API
        self._grid.set_run(run)

    @property
    def run(self) -> Any:  # noqa: D102 - Grid API
        return self._grid.run

    def create_message(self, *args: Any, **kwargs: Any) -> Message:  # noqa: D102
        return self._grid.create_message(*args, **kwargs)

    def get_node_ids(self) -> Iterable[int]:
        """The connected nodes; raises :class:`RunStoppedError` once ``stop`` is set (the
        ServerApp polls this while it waits for its clients to connect)."""
        if self._stop is not None and self._stop.is_set():
            raise RunStoppedError("the run was stopped while waiting for clients to connect")
        return self._grid.get_node_ids()

    def get_nodes(self) -> Iterable[Any]:  # noqa: D102 - Grid API
        return self._grid.get_nodes()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:  # noqa: D102
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:  # noqa: D102
        return self._grid.pull_messages(message_ids)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Push ``messages`` and poll for their replies until all came or ``timeout``.

        With a ``timeout``, retries of a listed reply's missing content stop when the
        timeout is reached (that reply becomes an error reply), see
        :func:`object_pulls_bounded`.
        """
        pending = set(self.push_messages(messages))
        end = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        while pending:
            if self._stop is not None and self._stop.is_set():
                raise RunStoppedError("the run was stopped while waiting for client replies")
            if end is None:
                got = list(self.pull_messages(pending))
            else:
                with object_pulls_bounded(max(end - time.monotonic(), 0.0)):
                    got = list(self.pull_messages(pending))
            replies.extend(got)
            pending.difference_update(m.metadata.reply_to_message_id for m in got)
            if not pending or (end is not None and time.monotonic() >= end):
                break
            time.sleep(self._interval)
        return replies

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)


@contextlib.contextmanager
def object_pulls_bounded(max_time: float) -> Iterator[None]:
    """Within the block, the ServerApp's grid retries a reply's objects for ``max_time`` s.

    Flower 1.42's ``HttpGrid.pull_messages`` calls ``pull_objects`` with its defaults
    (retries for up to 7,200 s); for the block, the name ``pull_objects`` in
    ``flwr.superlink.grid.http_grid`` is bound to the same function with ``max_time``.
    Past it Flower raises ``ObjectPullError`` and returns an error reply
    (``MESSAGE_UNAVAILABLE``) for that message. The ServerApp calls its grid from one
    thread, so the rebinding is not seen by any other caller. Without Flower's
    ``http_grid`` module loaded there is no ``HttpGrid``, and nothing to bound.
    """
    http_grid = sys.modules.get("flwr.superlink.grid.http_grid")
    if http_grid is None:
        yield
        return
    original = http_grid.pull_objects
    http_grid.pull_objects = functools.partial(original, max_time=max_time)
    try:
        yield
    finally:
        http_grid.pull_objects = original


# ----------------------------------------------------------------------------- SuperNode


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
        (:func:`run_warm_executor`); otherwise Flower's own SuperExec, polling faster.
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
            "import sys; from fedkd.deploy.procs import warm_executor_main; "
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


# ----------------------------------------------------------------------------- warm executor


def run_warm_executor(
    runtime_api_address: str,
    *,
    insecure: bool,
    root_certificates_path: str | None,
    parent_pid: int | None,
    poll_interval: float,
) -> None:
    """A SuperExec for ``flower-supernode --isolation process`` with a warm fork server.

    Acquires ClientApp tasks from the SuperNode's Runtime API and runs each with Flower's
    ``run_clientapp`` in a child of a fork server that preloaded :data:`WARM_PRELOAD`.
    Runs until the parent process (the SuperNode) exits or a signal stops it.
    """
    import multiprocessing as mp
    from importlib.util import find_spec

    from flwr.proto.runtime_pb2 import AcquireTaskRequest
    from flwr.supercore.app_utils import start_parent_process_monitor
    from flwr.supercore.constant import TaskType
    from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supercore.runtime import RuntimeHttpClient
    from flwr.supercore.tls import validate_and_resolve_root_certificates
    from flwr.supernode.runtime.run_clientapp import run_clientapp

    preload = list(WARM_PRELOAD) + [m for m in OPTIONAL_PRELOAD if find_spec(m) is not None]
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(preload)
    if parent_pid is not None:
        start_parent_process_monitor(parent_pid)
    certificates = validate_and_resolve_root_certificates(root_certificates_path, insecure)
    client = RuntimeHttpClient.from_server_address(
        server_address=runtime_api_address,
        insecure=insecure,
        root_certificates=certificates,
        interceptors=[RuntimeVersionHttpInterceptor(component_name="SuperExec")],
        retry_invoker=make_simple_http_retry_invoker(),
    )
    # Start the fork server now (it imports the preloads), not on the first message.
    warmup = ctx.Process(target=time.sleep, args=(0,))
    warmup.start()
    warmup.join()
    logger.info("warm executor ready on %s (preloaded %s)", runtime_api_address, preload)
    children: list[Any] = []
    try:
        while True:
            res = client.AcquireTask(AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP]))
            if res.HasField("task") and res.token:
                child = ctx.Process(
                    target=run_clientapp,
                    kwargs={
                        "runtime_api_address": runtime_api_address,
                        "token": res.token,
                        "insecure": insecure,
                        "certificates": certificates,
                        "parent_pid": os.getpid(),
                        "runtime_dependency_install": False,
                    },
                    daemon=False,
                )
                child.start()
                children.append(child)
                continue  # another task may be queued: ask again at once
            for child in [c for c in children if not c.is_alive()]:
                child.join()  # reap
                children.remove(child)
            time.sleep(poll_interval)
    finally:
        client.close()
        for child in children:
            if child.is_alive():
                child.terminate()
            child.join(5)


def warm_executor_main(argv: Sequence[str]) -> int:
    """Command line of the warm executor (started by :func:`run_supernode`)."""
    parser = argparse.ArgumentParser(prog="fedkd-warm-executor")
    parser.add_argument("--runtime-api-address", required=True)
    parser.add_argument("--insecure", action="store_true")
    parser.add_argument("--root-certificates")
    parser.add_argument("--parent-pid", type=int)
    parser.add_argument("--poll-interval", type=float, default=0.2)
    args = parser.parse_args(list(argv))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per poll otherwise

    def _on_signal(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _on_signal)
    with contextlib.suppress(KeyboardInterrupt):
        run_warm_executor(
            args.runtime_api_address,
            insecure=args.insecure,
            root_certificates_path=args.root_certificates,
            parent_pid=args.parent_pid,
            poll_interval=args.poll_interval,
        )
    return 0


# ----------------------------------------------------------------------------- local clusters


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def deploy_env(flwr_home: str | Path) -> dict[str, str]:
    """Environment for every process of a local deployment (offline, no re-installs).

    This interpreter's script directory comes first on ``PATH``: Flower starts
    ``flower-superexec`` by bare name, which must be the one of this environment even when
    it is not activated.
    """
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    path = env.get("PATH", "")
    if path.split(os.pathsep)[0] != bin_dir:
        env["PATH"] = os.pathsep.join([bin_dir, path]) if path else bin_dir
    env.update(
        {
            "FLWR_HOME": str(flwr_home),
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "HF_HUB_OFFLINE": "1",
            "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


class MissingExecutableError(FileNotFoundError):
    """A console script a local deployment needs is not installed."""


def console_script(name: str) -> str:
    """A console script: the one beside this interpreter, else the first on ``PATH``.

    Raises
    ------
    MissingExecutableError
        Neither exists; the message is one line naming both places.
    """
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise MissingExecutableError(
            f"{name} not found beside {sys.executable} nor on PATH; "
            "install fedkd in this environment (pip install -e .)"
        )
    return found


@dataclass
class Proc:
    """A started process, its log file and how to stop it."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    offset: int = 0  # where this process's output starts in ``log``

    def text(self) -> str:
        """The process's output so far."""
        if not self.log.exists():
            return ""
        with self.log.open("rb") as handle:
            handle.seek(self.offset)
            return handle.read().decode(errors="replace")

    def alive(self) -> bool:
        """True while the process runs."""
        return self.popen.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the process group, SIGKILL after ``timeout`` s; returns the status."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout)
        # Whatever the leader did, no child of the group may outlive it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout)
        self.wait_group_gone(timeout)
        return self.popen.returncode

    def group_gone(self) -> bool:
        """True when no process of this process's group is left (zombies included)."""
        try:
            os.killpg(self.popen.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def wait_group_gone(self, timeout: float = 10.0) -> bool:
        """Wait until the group's orphans are reaped by init; True if they are."""
        end = time.monotonic() + timeout
        while not self.group_gone():
            if time.monotonic() > end:
                return False
            time.sleep(0.05)
        return True

    def kill(self) -> None:
        """SIGKILL the whole process group at once (a crash), and reap the leader."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(10)
        self.wait_group_gone()


@dataclass
class LocalDeployment:
    """A SuperLink and SuperNodes on 127.0.0.1 with TLS and node authentication.

    Processes get their own process groups and logs under ``root``; :meth:`close` stops
    every one of them (use it as a context manager).
    """

    root: Path
    app_dir: Path
    tls: bool = True
    auth: bool = True
    poll_interval: float = 0.2
    warm: bool = True
    heartbeat_interval: float | None = None
    plain: bool = False  # plain ``flower-supernode`` (Flower's defaults), not ``fedkd supernode``
    port: int = field(default_factory=free_port)
    procs: list[Proc] = field(default_factory=list)
    run_ids: list[int] = field(default_factory=list)  # runs started by :meth:`run`

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.flwr_home = self.root / "flwr-home"
        self.flwr_home.mkdir(parents=True, exist_ok=True)
        self.env = deploy_env(self.flwr_home)
        self.certs = self.root / "certs"
        self.keys = self.root / "keys"
        self.connection = "fedkd-test"

    # -- lifecycle -------------------------------------------------------------------
    def __enter__(self) -> LocalDeployment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop every process started here (SuperNodes first, then the SuperLink)."""
        for proc in reversed(self.procs):
            proc.stop()

    def _start(self, name: str, command: list[str]) -> Proc:
        log = self.root / f"{name}.log"
        offset = log.stat().st_size if log.exists() else 0
        handle = log.open("ab")
        popen = subprocess.Popen(
            command,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.root,
            start_new_session=True,
        )
        handle.close()
        proc = Proc(name, popen, log, offset)
        self.procs.append(proc)
        return proc

    # -- set-up ----------------------------------------------------------------------
    def make_keys(self, names: Sequence[str]) -> None:
        """CA and server certificate (127.0.0.1, localhost) plus one key per device."""
        from fedkd.deploy.certs import make_ca, make_device_key, make_server_cert

        if not (self.certs / "ca.crt").exists():
            make_ca(self.certs)
            make_server_cert(self.certs, ["127.0.0.1", "localhost"])
        for name in names:
            if not (self.keys / name).exists():
                make_device_key(name, self.keys)

    def write_connection(self) -> None:
        """The ``flwr`` CLI's connection to this SuperLink in ``$FLWR_HOME/config.toml``."""
        lines = [
            "[superlink]",
            f'default = "{self.connection}"',
            "",
            f"[superlink.{self.connection}]",
            f'address = "127.0.0.1:{self.port}"',
        ]
        if self.tls:
            lines.append(f'root-certificates = "{self.certs / "ca.crt"}"')
        else:
            lines.append("insecure = true")
        (self.flwr_home / "config.toml").write_text("\n".join(lines) + "\n")

    def start_superlink(self, timeout: float = 60.0) -> Proc:
        """Start ``flower-superlink`` and wait until it serves."""
        command = [
            console_script("flower-superlink"),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        command += ["--disable-runtime-dependency-installation"]
        if self.tls:
            command += [
                "--ssl-ca-certfile",
                str(self.certs / "ca.crt"),
                "--ssl-certfile",
                str(self.certs / "server.pem"),
                "--ssl-keyfile",
                str(self.certs / "server.key"),
            ]
        else:
            command += ["--insecure"]
        if self.auth:
            command += ["--enable-supernode-auth"]
        self.write_connection()
        proc = self._start("superlink", command)
        wait_for(lambda: "Uvicorn running on" in proc.text(), timeout, proc, "SuperLink start")
        return proc

    def flwr(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run the ``flwr`` CLI against this deployment (from the app directory)."""
        return subprocess.run(
            [console_script("flwr"), *args],
            cwd=self.app_dir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def register(self, name: str) -> None:
        """``flwr supernode register keys/NAME.pub``; raises if the CLI fails."""
        res = self.flwr("supernode", "register", str(self.keys / f"{name}.pub"), self.connection)
        if res.returncode != 0 or "registered" not in res.stdout:
            raise RuntimeError(f"flwr supernode register {name} failed: {res.stdout}{res.stderr}")

    def start_supernode(
        self, name: str, node_config: str, *, runtime_port: int | None = None
    ) -> Proc:
        """Start a SuperNode (``fedkd supernode``) authenticated with key ``name``."""
        flower_args = [
            "--superlink",
            f"127.0.0.1:{self.port}",
            "--port",
            str(runtime_port or free_port()),
            "--node-config",
            node_config,
        ]
        if self.tls:
            flower_args += ["--root-certificates", str(self.certs / "ca.crt")]
        else:
            flower_args += ["--insecure"]
        if self.auth:
            flower_args += ["--auth-supernode-private-key", str(self.keys / name)]
        if self.plain:
            return self._start(name, [console_script("flower-supernode"), *flower_args])
        command = [console_script("fedkd"), "supernode", "--poll-interval", str(self.poll_interval)]
        if self.heartbeat_interval is not None:
            command += ["--heartbeat-interval", str(self.heartbeat_interval)]
        if not self.warm:
            command.append("--cold")
        return self._start(name, [*command, "--", *flower_args])

    def rejoin(self, name: str, node_config: str, timeout: float = 90.0) -> Proc:
        """Start SuperNode ``name`` again after a crash, as a supervisor would.

        Until the SuperLink notices the crash (two heartbeat intervals), it refuses the
        key (``[code: 2004]``, exit 305); retry every second until the node is active.
        """
        end = time.monotonic() + timeout
        while True:
            proc = self.start_supernode(name, node_config)
            wait_for(
                lambda p=proc: "SuperNode ID:" in p.text() or not p.alive(),
                max(1.0, end - time.monotonic()),
                what=f"{name} activation",
            )
            if proc.alive():
                return proc
            if "[code: 2004]" not in proc.text() or time.monotonic() > end:
                raise RuntimeError(f"{name} did not rejoin:\n{proc.text()[-2000:]}")
            time.sleep(0.5)

    def run(self, run_config: str, timeout: float = 60.0) -> int:
        """``flwr run . CONNECTION --run-config ...``; returns the run id."""
        res = self.flwr("run", ".", self.connection, "--run-config", run_config, timeout=timeout)
        for line in res.stdout.splitlines():
            if "Successfully started run" in line:
                self.run_ids.append(int(line.split()[-1]))
                return self.run_ids[-1]
        raise RuntimeError(f"flwr run failed ({res.returncode}): {res.stdout}{res.stderr}")


def wait_for(
    condition: Any, timeout: float, proc: Proc | None = None, what: str = "condition"
) -> None:
    """Poll ``condition()`` every 0.1 s; raise TimeoutError (with the log tail) if late."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return
        if proc is not None and not proc.alive():
            raise RuntimeError(
                f"{proc.name} exited ({proc.popen.returncode}):\n{proc.text()[-3000:]}"
            )
        time.sleep(0.1)
    tail = proc.text()[-3000:] if proc is not None else ""
    raise TimeoutError(f"{what} not reached within {timeout:.0f} s\n{tail}")
