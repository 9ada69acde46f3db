"""Fast-round pieces without processes: the ServerApp's grid, the SuperNode's sleeps, CLI."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from fedkd.server import grid as server_grid
from fedkd.simulations.cli import main
from flwr.serverapp import Grid
from flwr.supercore.inflatable.inflatable_utils import ObjectPullError, ObjectUnavailableError
from flwr.superlink.grid import http_grid

from fedkd.deploy import supernode

from . import cluster


class _FakeGrid(Grid):
    """Replies to message ``i`` become available after ``delays[i]`` seconds."""

    def __init__(self, delays: list[float]) -> None:
        self.delays = delays
        self.t0 = 0.0
        self.pulls = 0

    def set_run(self, run):  # noqa: D102
        pass

    @property
    def run(self):  # noqa: D102
        return None

    def create_message(self, *args, **kwargs):  # noqa: D102
        raise NotImplementedError

    def get_node_ids(self):  # noqa: D102
        return [1, 2]

    def push_messages(self, messages):  # noqa: D102
        self.t0 = time.monotonic()
        return [str(i) for i, _ in enumerate(messages)]

    def pull_messages(self, message_ids):  # noqa: D102
        self.pulls += 1
        now = time.monotonic() - self.t0
        return [
            SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=i))
            for i in sorted(message_ids)
            if now >= self.delays[int(i)]
        ]

    def send_and_receive(self, messages, *, timeout=None):  # noqa: D102
        raise AssertionError("FastPollGrid must not call the slow loop")


def test_fast_poll_grid_returns_replies_soon_after_they_arrive() -> None:
    grid = server_grid.FastPollGrid(_FakeGrid([0.0, 0.3]), interval=0.05)
    t0 = time.monotonic()
    replies = list(grid.send_and_receive(["a", "b"], timeout=5))
    elapsed = time.monotonic() - t0
    assert sorted(r.metadata.reply_to_message_id for r in replies) == ["0", "1"]
    assert 0.3 <= elapsed < 1.0  # Flower's own loop would take 3 s
    assert list(grid.get_node_ids()) == [1, 2]


def test_fast_poll_grid_gives_up_at_the_timeout() -> None:
    grid = server_grid.FastPollGrid(_FakeGrid([0.0, 60.0]), interval=0.05)
    t0 = time.monotonic()
    replies = list(grid.send_and_receive(["a", "b"], timeout=0.3))
    assert len(replies) == 1 and time.monotonic() - t0 < 1.0


def test_fast_poll_grid_interval_from_environment(monkeypatch) -> None:
    monkeypatch.setenv(server_grid.GRID_POLL_ENV, "3")
    assert server_grid.FastPollGrid(_FakeGrid([0.0]))._interval == 3.0


def test_supernode_sleeps_are_capped(monkeypatch) -> None:
    from flwr.supernode import start_client_internal as sci

    monkeypatch.setattr(sci, "time", sci.time)  # restored after the test
    supernode.shorten_supernode_polling(0.01)
    t0 = time.monotonic()
    sci.time.sleep(3)
    assert time.monotonic() - t0 < 0.5
    assert sci.time.monotonic() > 0  # everything else is the real time module


def test_flag_parsing() -> None:
    args = ["--port", "9", "--host=0.0.0.0", "--port=10"]
    assert supernode._flag(args, "--port") == "10"
    assert supernode._flag(args, "--host") == "0.0.0.0"
    assert supernode._flag(args, "--ssl-ca-certfile") is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["supernode", "--", "--isolation", "subprocess"], "sets --isolation itself"),
        (["supernode", "--poll-interval", "9", "--", "--insecure"], "--poll-interval"),
        (["supernode", "--heartbeat-interval", "2", "--", "--insecure"], "heartbeat"),
    ],
)
def test_supernode_command_refuses_bad_options(argv, message, capsys) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


class _MissingContentGrid(_FakeGrid):
    """Lists one reply whose objects never arrive, as after a SuperNode crashed mid-upload:
    its ``pull_messages`` pulls them through Flower's ``pull_objects`` as ``HttpGrid`` does."""

    def pull_messages(self, message_ids):  # noqa: D102
        self.pulls += 1

        def unavailable(object_id: str) -> bytes:
            raise ObjectUnavailableError(object_id)

        try:
            http_grid.pull_objects(["obj"], unavailable, initial_backoff=0.05, backoff_cap=0.05)
        except ObjectPullError as err:
            return [SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id="0"), err=err)]
        raise AssertionError("a missing object cannot be pulled")


def test_fast_poll_grid_stops_retrying_missing_reply_content_at_the_round_timeout() -> None:
    original = http_grid.pull_objects
    grid = server_grid.FastPollGrid(_MissingContentGrid([0.0]), interval=0.05)
    t0 = time.monotonic()
    replies = list(grid.send_and_receive(["a"], timeout=0.5))
    elapsed = time.monotonic() - t0
    # Flower's default would retry for up to 2 hours; here the reply becomes an error.
    assert [r.metadata.reply_to_message_id for r in replies] == ["0"]
    assert "timeout or retry limit" in str(replies[0].err)
    assert 0.4 <= elapsed < 3.0
    assert http_grid.pull_objects is original  # the bound holds only inside the call


def test_fast_poll_grid_stops_waiting_for_replies_once_the_run_is_stopped() -> None:
    import threading

    stop = threading.Event()
    fake = _FakeGrid([0.0, 60.0])
    grid = server_grid.FastPollGrid(fake, interval=0.05, stop=stop)
    threading.Timer(0.2, stop.set).start()
    with pytest.raises(server_grid.RunStoppedError, match="stopped"):
        grid.send_and_receive(["a", "b"], timeout=30)
    assert fake.pulls >= 1  # it did wait until the stop, then gave up (not at the timeout)


def test_fast_poll_grid_stops_a_wait_for_clients_to_connect() -> None:
    import threading

    stop = threading.Event()
    grid = server_grid.FastPollGrid(SimpleNamespace(get_node_ids=lambda: [1, 2]), stop=stop)
    assert list(grid.get_node_ids()) == [1, 2]
    stop.set()
    with pytest.raises(server_grid.RunStoppedError, match="connect"):
        grid.get_node_ids()


def test_console_script_prefers_this_interpreter_then_path_then_names_both(tmp_path, monkeypatch):
    venv_bin, on_path = tmp_path / "venv" / "bin", tmp_path / "path"
    venv_bin.mkdir(parents=True)
    on_path.mkdir()
    for where in (venv_bin, on_path):
        script = where / "flower-superlink"
        script.write_text("#!/bin/sh\n")
        script.chmod(0o755)
    monkeypatch.setattr(cluster.sys, "executable", str(venv_bin / "python"))
    monkeypatch.setenv("PATH", str(on_path))
    assert cluster.console_script("flower-superlink") == str(venv_bin / "flower-superlink")
    (venv_bin / "flower-superlink").unlink()
    assert cluster.console_script("flower-superlink") == str(on_path / "flower-superlink")
    (on_path / "flower-superlink").unlink()
    with pytest.raises(cluster.MissingExecutableError) as err:
        cluster.console_script("flower-superlink")
    assert str(venv_bin / "python") in str(err.value) and "PATH" in str(err.value)
    assert len(str(err.value).splitlines()) == 1


def test_deploy_env_puts_this_interpreters_scripts_first_on_path(tmp_path, monkeypatch):
    monkeypatch.setattr(cluster.sys, "executable", "/opt/venv/bin/python")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert cluster.deploy_env(tmp_path)["PATH"] == "/opt/venv/bin:/usr/bin:/bin"
    monkeypatch.setenv("PATH", "/opt/venv/bin:/usr/bin")
    assert cluster.deploy_env(tmp_path)["PATH"] == "/opt/venv/bin:/usr/bin"  # not twice
