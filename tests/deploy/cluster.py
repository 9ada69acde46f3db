"""Local Flower clusters on 127.0.0.1 for the deployment tests and the deploy benchmark.

A :class:`LocalDeployment` starts a SuperLink (TLS, node authentication) and SuperNodes
(``fedkd supernode`` or plain ``flower-supernode``) in their own process groups, with logs
under its root, and stops every one of them on :meth:`LocalDeployment.close`. Test and
benchmark code only; not part of the ``fedkd`` package.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


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

    def run(self, run_config: str, timeout: float = 180.0) -> int:
        """``flwr run . CONNECTION --run-config ...``; returns the run id."""
        # Only submits the run (packs the app, sends it): quick when idle, but it took over
        # 60 s on a 2-core machine also running a benchmark, so the deadline is generous.
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
