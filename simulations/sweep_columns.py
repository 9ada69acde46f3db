"""The columns every row of a sweep's ``results.csv`` has, after the swept keys.

Shared by :mod:`fedkd.simulations.sweep` (which writes the table) and
:mod:`fedkd.simulations.sweep_plots` (which tells swept settings from results).
"""

from __future__ import annotations

__all__ = ["RESULT_COLUMNS"]

#: Columns of ``results.csv`` after the swept keys (``cell`` comes first).
RESULT_COLUMNS: tuple[str, ...] = (
    "method",
    "mechanism",
    "seed",
    "target_epsilon",
    "status",
    "rounds_completed",
    "student_accuracy",
    "worst_client_accuracy",
    "epsilon_example",
    "delta_example",
    "epsilon_client",
    "delta_client",
    "bytes_up",
    "bytes_down",
    "bytes_up_per_client_round",
    "bytes_down_per_client_round",
    "wall_seconds",
    "stopped",
    "val_accuracy",
    "accountant",
    "neighbouring",
)
