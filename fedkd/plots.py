"""PNG plots of a run (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from fedkd.atomic import write_bytes  # noqa: E402


def plot_run(rows: list[dict[str, Any]], path: str | Path) -> None:
    """Student and teacher accuracy, and uplink/downlink bytes, by round."""
    import io

    rounds = [r["round"] for r in rows]
    fig, (ax_acc, ax_bytes) = plt.subplots(1, 2, figsize=(10, 4))
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
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    write_bytes(path, buf.getvalue())
