"""A client's state across rounds: its model, optimizer and DP-SGD accountant.

Kept in memory between messages (Flower's ``context.state``) and, when a state folder is
given, on disk after every round, written atomically, one file per round. A client that
restarts picks up the model of the last round before the one it is asked for, and the
newest DP-SGD accountant it ever saved: ε never goes back, even if a round is re-run.
"""

from __future__ import annotations

import io
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fedkd.atomic import write_bytes, write_json

logger = logging.getLogger(__name__)

_ROUND_FILE = re.compile(r"round-(\d+)\.pt$")
KEEP_FILES = 3
ACCOUNTANT_FILE = "dpsgd-accountant.json"  # the largest DP-SGD count ever saved


@dataclass
class ClientState:
    """Everything a client carries from one round to the next."""

    round: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any] | None = None
    dpsgd: dict[str, Any] | None = None  # DPSGDState as a dict
    extra: dict[str, Any] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        """Serialise with ``torch.save``."""
        buf = io.BytesIO()
        torch.save(self.__dict__, buf)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes) -> ClientState:
        """Inverse of :meth:`to_bytes` (tensors and plain containers only)."""
        return cls(**torch.load(io.BytesIO(blob), weights_only=True))


class StateDir:
    """Per-round state files of one client under ``root``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _files(self) -> list[tuple[int, Path]]:
        if not self.root.is_dir():
            return []
        found = []
        for path in self.root.iterdir():
            match = _ROUND_FILE.fullmatch(path.name)
            if match:
                found.append((int(match.group(1)), path))
        return sorted(found)

    def save(self, state: ClientState) -> None:
        """Write ``state`` atomically and prune all but the newest few files.

        The DP-SGD count goes first into :data:`ACCOUNTANT_FILE`, which only ever grows:
        pruning by round number (a server can name any round) never loses it.
        """
        if state.dpsgd is not None:
            kept = self.max_dpsgd()
            if kept is None or state.dpsgd["steps"] >= kept["steps"]:
                write_json(self.root / ACCOUNTANT_FILE, state.dpsgd)
        write_bytes(self.root / f"round-{state.round:06d}.pt", state.to_bytes())
        for _, old in self._files()[:-KEEP_FILES]:
            old.unlink(missing_ok=True)

    def max_dpsgd(self) -> dict[str, Any] | None:
        """The DP-SGD state with the most steps this device ever saved (None if none)."""
        path = self.root / ACCOUNTANT_FILE
        if not path.is_file():
            return None
        return json.loads(path.read_text())

    def load_before(self, server_round: int) -> ClientState | None:
        """State after the last round before ``server_round``, with the newest accountant."""
        files = self._files()
        if not files:
            return None
        earlier = [p for r, p in files if r < server_round]
        if not earlier:
            return None
        state = ClientState.from_bytes(earlier[-1].read_bytes())
        newest = ClientState.from_bytes(files[-1][1].read_bytes())
        if newest.dpsgd is not None:
            state.dpsgd = newest.dpsgd
        return state
