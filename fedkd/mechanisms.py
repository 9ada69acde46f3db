"""Server-side teacher construction with the client-level privacy mechanism and its ledger.

``none``: an aggregation rule from :mod:`fedkd.aggregate`. ``gaussian``: clip each
client's prediction matrix, sum, add Gaussian noise (trusted server). ``pate``: vote
histograms answered by (Confident-)GNMax. Example-level DP-SGD runs on the clients; the
server only copies each client's reported DP-SGD steps into the same ledger, so that every
ε in the run's output is recomputed from one ledger.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from fedkd.aggregate import aggregate
from fedkd.config import Config

logger = logging.getLogger(__name__)


class BudgetReached(Exception):
    """The next round would exceed ``privacy.max_epsilon``; the run stops cleanly."""


class CentralMechanism:
    """Turns stacked client predictions into teacher labels and keeps the privacy ledger."""

    def __init__(self, cfg: Config, num_examples: int) -> None:
        self.cfg = cfg
        self.num_examples = num_examples
        self.mechs = set(cfg.privacy.mechanisms)

    # -- teacher ------------------------------------------------------------------------------
    def teacher(
        self, server_round: int, preds: np.ndarray, weights: np.ndarray, num_clients: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Teacher labels for the round.

        Returns the answered rows (positions into the round's proxy subset) and their
        (rows, C) teacher probabilities.
        """
        d = self.cfg.distill
        rows = np.arange(preds.shape[1])
        return rows, aggregate(d.aggregation, preds, weights, **d.aggregation_params)

    # -- privacy accounting (filled in by the privacy paths) ----------------------------------
    def check_budget(self, server_round: int, num_clients: int) -> None:
        """Raise :class:`BudgetReached` when the round would exceed the budget."""

    def record_client_releases(self, server_round: int, metrics: list[dict[str, Any]]) -> None:
        """Copy the DP-SGD steps the clients report into the ledger."""

    def epsilons(self) -> dict[str, float]:
        """Current ε per scope."""
        return {}

    def describe(self, row: dict[str, Any]) -> str:
        """A short suffix for the progress line."""
        return ""

    def ledger_dict(self) -> dict[str, Any]:
        """The ledger as JSON-ready data."""
        return {"releases": []}

    def save_ledger(self, run_path: Path) -> None:
        """Write ``ledger.json`` into the run directory."""

    def state_dict(self) -> dict[str, Any]:
        """Checkpoint state."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
