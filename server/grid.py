"""The ServerApp's grid for fast deployment rounds on Flower 1.42.

Two causes of slow or stalled deployment rounds sit on the ServerApp side:

1. **Polling.** The ServerApp's ``Grid.send_and_receive`` polls for replies every 3 s;
   :class:`FastPollGrid` polls every 0.1 s (the SuperNode side is
   :mod:`fedkd.deploy.supernode`).
2. **A reply whose content never arrives.** A SuperNode pushes a reply's message first
   and its objects (the arrays) after. If it crashes in between, the SuperLink lists the
   reply, and Flower's ``pull_messages`` retries the missing objects with back-off for up
   to 2 hours (``PULL_MAX_TIME``), ignoring the round timeout: the run stalls.
   :class:`FastPollGrid` bounds those retries by the time left in the round, after which
   Flower turns the reply into an error reply and the round goes on without that node.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from flwr.app import Message
from flwr.serverapp import Grid

GRID_POLL_SECONDS = 0.1
GRID_POLL_ENV = "FEDKD_GRID_POLL_SECONDS"  # override (e.g. 3 to measure Flower's default)


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
