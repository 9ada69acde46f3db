"""PNG plots of a run (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from fedkd.atomic import write_bytes  # noqa: E402

_EPSILON_KEYS = {"epsilon_example": "example level", "epsilon_client": "client level"}


def _plot_epsilon(ax: Any, rounds: list[int], rows: list[dict[str, Any]]) -> None:
    """ε by round, one line per scope, named by its accountant and relation."""
    for key, label in _EPSILON_KEYS.items():
        values = [r.get(key) for r in rows]
        if any(v is not None for v in values):
            ax.plot(
                rounds, [float("nan") if v is None else v for v in values], marker="o", label=label
            )
    accountant = rows[-1].get("accountant", "pld").upper()
    title = f"privacy spent (ε, {accountant}, replace-one)"
    if rows[-1].get("epsilon_guarantee") is False:
        title += "\nNOT A GUARANTEE (seeded noise)"
    ax.set(xlabel="round", ylabel="ε", title=title)
    ax.grid(alpha=0.3)
    ax.legend()


def plot_run(rows: list[dict[str, Any]], path: str | Path) -> None:
    """Student and teacher accuracy, bytes and (for DP runs) ε, by round."""
    import io

    from matplotlib.ticker import MaxNLocator

    rounds = [r["round"] for r in rows]
    private = any(k in rows[-1] for k in _EPSILON_KEYS)
    fig, axes = plt.subplots(1, 3 if private else 2, figsize=(15 if private else 10, 4))
    ax_acc, ax_bytes = axes[0], axes[1]
    ax_acc.plot(rounds, [r["student_accuracy"] for r in rows], marker="o", label="student (test)")
    ax_acc.plot(rounds, [r["teacher_accuracy"] for r in rows], marker=".", label="teacher (proxy)")
    ax_acc.set(xlabel="round", ylabel="accuracy", ylim=(0, 1), title="accuracy")
    ax_acc.grid(alpha=0.3)
    ax_acc.legend()
    nan = float("nan")  # withheld under Poisson client sampling
    ups = [nan if r["bytes_up"] is None else r["bytes_up"] for r in rows]
    downs = [nan if r["bytes_down"] is None else r["bytes_down"] for r in rows]
    ax_bytes.plot(rounds, ups, marker="o", label="up (all clients)")
    ax_bytes.plot(rounds, downs, marker=".", label="down (all clients)")
    ax_bytes.set(xlabel="round", ylabel="bytes", title="bytes moved per round")
    ax_bytes.grid(alpha=0.3)
    ax_bytes.legend()
    if private:
        _plot_epsilon(axes[2], rounds, rows)
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # rounds are whole numbers
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    write_bytes(path, buf.getvalue())
