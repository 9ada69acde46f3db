"""The privacy part of a round's progress line."""

from __future__ import annotations

from typing import Any


def progress_suffix(row: dict[str, Any], seeded: bool) -> str:
    """``"  ε_example x  ε_client y  (PLD, replace-one)"`` for the figures ``row`` holds.

    Parameters
    ----------
    row : dict
        One round's metrics (``epsilon_example`` / ``epsilon_client`` when reported).
    seeded : bool
        Whether the noise came from ``seed``: the suffix then says the ε is no guarantee.
    """
    parts = [
        f"{label} {row[key]:.3f}"
        for key, label in (("epsilon_example", "ε_example"), ("epsilon_client", "ε_client"))
        if key in row
    ]
    if parts:
        parts.append("(PLD, replace-one)")
    if parts and seeded:
        from fedkd.privacy.entropy import INSECURE_NOTE

        parts.append(INSECURE_NOTE)
    return ("  " + "  ".join(parts)) if parts else ""
