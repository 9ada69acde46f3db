"""Plots of a sweep (matplotlib, Agg): accuracy vs ε, vs round, vs uplink bytes.

Series are ``method / mechanism`` (plus the other swept values, if any); each has one
colour in every figure and panel (:func:`series_colors`). Seeds are averaged (mean ± std).
In the ε plot every non-private series (ε = ∞: fedkd without mechanisms, ``central``,
``fedavg``, ``local``, ...) is a horizontal dotted reference line at its mean accuracy.
"""

from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from fedkd.simulations.report_tables import mean_std

logger = logging.getLogger(__name__)

_SCOPE = {"dpsgd": "example", "gaussian": "client", "pate": "client"}


def _num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def setting_of(row: dict[str, Any]) -> str:
    """Other swept values of a row (not method, seed, ε, mechanism), e.g. ``clients.lr=0.1``."""
    from fedkd.simulations.report_tables import setting_of as _setting_of

    return _setting_of(row)


def series_label(row: dict[str, Any]) -> str:
    """Legend label of a results row, e.g. ``fedkd / dpsgd (example-level)``."""
    mech = row["mechanism"]
    setting = setting_of(row)
    suffix = f" [{setting}]" if setting else ""
    if mech == "none":
        return f"{row['method']}{suffix}"
    scope = _SCOPE.get(mech.split("+")[0], "")
    label = f"{row['method']} / {mech} ({scope}-level)" if scope else f"{row['method']} / {mech}"
    return label + suffix


def _done(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r.get("status") == "done"]


def _mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample std of the finite values, as in the tables (std 0 for one value)."""
    mean, std, n = mean_std(values)
    return mean, (std if n > 1 else 0.0)


def series_colors(rows: list[dict[str, Any]]) -> dict[str, str]:
    """One colour per series (method / mechanism, and setting), shared by every figure.

    The colours depend on all finished rows only, not on what one figure or panel draws, so
    a series has the same colour in the ε plot, in every panel of the per-round and
    per-byte plots, and in each of their legends.

    Parameters
    ----------
    rows : list of dict
        Results rows (``results.csv``).

    Returns
    -------
    dict
        Series label (:func:`series_label`) -> matplotlib colour.
    """
    labels = sorted(
        {series_label(r): _series_order(r) for r in _done(rows)}.items(),
        key=lambda kv: (kv[1], kv[0]),
    )
    if len(labels) <= 10:
        return {label: f"C{i}" for i, (label, _) in enumerate(labels)}
    import matplotlib
    import matplotlib.colors

    cmap = matplotlib.colormaps["tab20"]
    return {label: matplotlib.colors.to_hex(cmap(i % 20)) for i, (label, _) in enumerate(labels)}


_METHOD_ORDER = ("fedkd", "central", "central-dpsgd", "local", "fedavg", "dp-fedavg")


def _series_order(row: dict[str, Any]) -> tuple[int, str, str]:
    method = row["method"]
    rank = _METHOD_ORDER.index(method) if method in _METHOD_ORDER else len(_METHOD_ORDER)
    return (rank, f"{method} {row['mechanism']}", setting_of(row))


def _save(fig: Any, path: Path, dpi: int) -> None:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def plot_accuracy_vs_epsilon(rows: list[dict[str, Any]], path: Path) -> None:
    """Final accuracy against target ε, one line per private series, mean ± std over seeds.

    Each non-private series (ε = ∞) is a horizontal dotted line at its mean accuracy, in
    its own colour, with a band of ± std when there are several seeds.
    """
    fig = epsilon_figure(rows)
    if fig is None:
        logger.info("no private cells: skipping %s", path.name)
        return
    _save(fig, path, dpi=110)


def epsilon_figure(rows: list[dict[str, Any]]) -> Any:
    """The figure of :func:`plot_accuracy_vs_epsilon`, or None without private cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = _done(rows)
    private = [r for r in done if r["mechanism"] != "none"]
    eps_values = sorted({_num(r["target_epsilon"]) for r in private})
    eps_values = [e for e in eps_values if math.isfinite(e)]
    if not eps_values:
        return None
    colors = series_colors(rows)
    groups: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    non_private: dict[str, list[float]] = defaultdict(list)
    for r in done:
        eps = _num(r["target_epsilon"])
        if r["mechanism"] == "none":
            non_private[series_label(r)].append(_num(r["student_accuracy"]))
        elif math.isfinite(eps):
            groups[series_label(r)][eps].append(_num(r["student_accuracy"]))
    order = {label: i for i, label in enumerate(colors)}
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for label in sorted(groups, key=order.__getitem__):
        xs = sorted(groups[label])
        means, stds = zip(*(_mean_std(groups[label][x]) for x in xs), strict=True)
        style = "--" if "(client-level)" in label else "-"
        ax.errorbar(
            xs,
            means,
            yerr=stds,
            marker="o",
            capsize=3,
            linestyle=style,
            color=colors[label],
            label=label,
        )
    for label in sorted(non_private, key=order.__getitem__):
        mean, std = _mean_std(non_private[label])
        if not math.isfinite(mean):
            continue
        ax.axhline(mean, color=colors[label], linestyle=":", label=f"{label} (ε = ∞)")
        if std > 0:
            ax.axhspan(mean - std, mean + std, color=colors[label], alpha=0.08, linewidth=0)
    ax.set_xscale("log", base=2)
    ax.set_xticks(eps_values)
    ax.set_xticklabels([f"{e:g}" for e in eps_values])
    ax.set_xlabel("target ε (example-level δ for dpsgd, client-level δ otherwise)")
    ax.set_ylabel("final test accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("accuracy vs privacy budget (mean ± std over seeds; dotted: ε = ∞)")
    fig.tight_layout()
    return fig


def _curves(out: Path, rows: list[dict[str, Any]]) -> dict[tuple[str, float], list[list[dict]]]:
    """Per (series, target ε): the metrics rows of every seed's run."""
    curves: dict[tuple[str, float], list[list[dict]]] = defaultdict(list)
    for r in _done(rows):
        metrics = out / r["cell"] / "metrics.json"
        if metrics.exists():
            rounds = json.loads(metrics.read_text())["rounds"]
            curves[(series_label(r), _num(r["target_epsilon"]))].append(rounds)
    return curves


def _panels(curves: dict[tuple[str, float], Any]) -> list[float]:
    eps = sorted({e for _, e in curves}, key=lambda e: (math.isnan(e), e))
    return eps


def plot_accuracy_vs_round(out: Path, rows: list[dict[str, Any]], path: Path) -> None:
    """Test accuracy per round, one panel per target ε, mean over seeds."""
    _plot_curves(out, rows, path, x_key="round")


def plot_accuracy_vs_bytes(out: Path, rows: list[dict[str, Any]], path: Path) -> None:
    """Test accuracy against cumulative uplink bytes, one panel per target ε (log x)."""
    _plot_curves(out, rows, path, x_key="bytes_up")


def _plot_curves(out: Path, rows: list[dict[str, Any]], path: Path, *, x_key: str) -> None:
    fig = curves_figure(out, rows, x_key=x_key)
    if fig is not None:
        _save(fig, path, dpi=100)


def curves_figure(out: Path, rows: list[dict[str, Any]], *, x_key: str) -> Any:
    """Accuracy against ``round`` or ``bytes_up``, one panel per target ε; None if empty.

    Colours come from :func:`series_colors` over all rows, so they match across panels
    and across figures.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = _curves(out, rows)
    if x_key == "bytes_up":  # nothing is sent by central / local
        curves = {
            k: v for k, v in curves.items() if any(r.get("bytes_up", 0) for run in v for r in run)
        }
    if not curves:
        return None
    panels = _panels(curves)
    colors = series_colors(rows)
    order = {label: i for i, label in enumerate(colors)}
    fig, axes = plt.subplots(
        1, len(panels), figsize=(4.2 * len(panels), 4.0), squeeze=False, sharey=True
    )
    for ax, eps in zip(axes[0], panels, strict=True):
        for (label, e), runs in sorted(curves.items(), key=lambda kv: order[kv[0][0]]):
            if not (e == eps or (math.isnan(e) and math.isnan(eps))):
                continue
            length = min(len(run) for run in runs)
            if length == 0:
                continue
            acc = np.array([[_num(r["student_accuracy"]) for r in run[:length]] for run in runs])
            if x_key == "round":
                xs = np.array([r["round"] for r in runs[0][:length]])
            else:
                xs = np.mean(
                    [np.cumsum([r.get("bytes_up", 0) for r in run[:length]]) for run in runs],
                    axis=0,
                )
            ax.plot(xs, np.nanmean(acc, axis=0), marker=".", label=label, color=colors[label])
        title = "non-private" if math.isinf(eps) else f"ε = {eps:g}"
        ax.set_title(title)
        ax.set_xlabel("round" if x_key == "round" else "cumulative uplink bytes (all clients)")
        if x_key == "bytes_up":
            ax.set_xscale("log")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="lower right")
    axes[0][0].set_ylabel("test accuracy (mean over seeds)")
    fig.tight_layout()
    return fig


def plot_sweep(out: str | Path, rows: list[dict[str, Any]]) -> list[Path]:
    """Draw the three sweep plots into ``out``; return the files written."""
    out = Path(out)
    written = []
    for name, draw in (
        ("accuracy_vs_epsilon.png", lambda p: plot_accuracy_vs_epsilon(rows, p)),
        ("accuracy_vs_round.png", lambda p: plot_accuracy_vs_round(out, rows, p)),
        ("accuracy_vs_uplink_bytes.png", lambda p: plot_accuracy_vs_bytes(out, rows, p)),
    ):
        path = out / name
        try:
            draw(path)
        except Exception:  # noqa: BLE001 - a plot must never lose the results
            logger.exception("could not draw %s", name)
            continue
        if path.exists():
            written.append(path)
    logger.info("plots: %s", ", ".join(p.name for p in written) or "none")
    return written


def summary_table(rows: list[dict[str, Any]], out: str | Path | None = None) -> str:
    """The sweep's ``results.md``: :func:`~fedkd.simulations.report_tables.results_table`.

    ``out`` (the sweep folder) lets the accountant column read what each cell's run folder
    recorded; without it the column says ``not recorded``.
    """
    from fedkd.simulations.report import with_accounting
    from fedkd.simulations.report_tables import results_table

    return results_table(with_accounting(rows, Path(out) if out is not None else None))
