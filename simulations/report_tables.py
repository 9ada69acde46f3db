"""Markdown tables of sweep results: one row per group of seeds, and a headline pivot.

Pure functions of ``results.csv`` rows (dicts of strings or numbers, as
:func:`fedkd.simulations.sweep.result_row` or :class:`csv.DictReader` give them). A *group* is
one (method, privacy mechanism, target ε, setting): its rows differ only by seed.
Accuracies are the mean ± standard deviation over the group's seeds (sample std,
``ddof=1``, as in the sweep plots and ``fedkd tune``'s summary); a group with one seed
reads ``0.9123 (1 seed)``, never ``± 0.0000``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Row order of the methods in every table (others follow, alphabetically).
METHOD_ORDER = ("fedkd", "central", "central-dpsgd", "local", "fedavg", "dp-fedavg")
#: Privacy level of each mechanism: whose data one ε protects.
LEVEL = {"dpsgd": "example", "gaussian": "client", "pate": "client"}
#: The column a row's accountant comes from (see :mod:`fedkd.simulations.report`).
ACCOUNTING = "accounting"
NOT_RECORDED = "not recorded"
_NOT_SETTING = {"cell", "epsilon", "privacy.mechanisms", "method", "seed", ACCOUNTING}


class TableError(ValueError):
    """Rows that cannot be rendered as asked (e.g. a choice only test accuracy could make)."""


@dataclass(frozen=True)
class Group:
    """The rows of one (method, mechanism, target ε, setting), one per seed."""

    method: str
    mechanism: str
    target_epsilon: float
    setting: str
    rows: tuple[dict[str, Any], ...]


def num(value: Any) -> float:
    """``value`` as a float; ``nan`` for an empty or non-numeric cell."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def mean_std(values: list[float]) -> tuple[float, float, int]:
    """Mean, sample std (ddof 1) and count of the finite ``values``.

    ``nan, nan, 0`` if none; the std of one value is ``nan``.
    """
    arr = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    if not len(arr):
        return float("nan"), float("nan"), 0
    std = float(arr.std(ddof=1)) if len(arr) > 1 else float("nan")
    return float(arr.mean()), std, len(arr)


def mean_std_text(values: list[float]) -> str:
    """``0.9123 ± 0.0100``; one finite value: ``0.9123 (1 seed)``; none: ``—``."""
    mean, std, n = mean_std(values)
    if n == 0:
        return "—"
    if n == 1:
        return f"{mean:.4f} (1 seed)"
    return f"{mean:.4f} ± {std:.4f}"


def setting_of(row: dict[str, Any]) -> str:
    """Other swept values of a row (not method, seed, ε, mechanism), e.g. ``clients.lr=0.1``."""
    from fedkd.simulations.sweep_columns import RESULT_COLUMNS

    skip = _NOT_SETTING | set(RESULT_COLUMNS) | {"val_accuracy", "accountant", "neighbouring"}
    keys = [k for k in row if k not in skip and not k.startswith("_")]
    return ", ".join(f"{k}={row[k]}" for k in keys if row[k] not in ("", None))


def eps_text(eps: float) -> str:
    """A target ε as a table shows it: ``2``, ``0.5``, ``∞``."""
    return "∞" if math.isinf(eps) else f"{eps:g}"


def groups_of(rows: list[dict[str, Any]]) -> list[Group]:
    """Finished rows grouped by (method, mechanism, target ε, setting), in table order."""
    found: dict[tuple[str, str, float, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r.get("status") == "done":
            key = (r["method"], r["mechanism"], num(r["target_epsilon"]), setting_of(r))
            found[key].append(r)

    def order(key: tuple[str, str, float, str]) -> tuple:
        rank = METHOD_ORDER.index(key[0]) if key[0] in METHOD_ORDER else len(METHOD_ORDER)
        return (rank, key[0], key[1] == "none", key[1], key[3], key[2])

    return [Group(*key, tuple(found[key])) for key in sorted(found, key=order)]


def _levels(mechanism: str) -> list[str]:
    """Privacy levels a mechanism string covers, example first (``dpsgd+gaussian``: both)."""
    parts = mechanism.split("+")
    return [lv for lv in ("example", "client") if any(LEVEL.get(p) == lv for p in parts)]


def _measured(group: Group) -> tuple[str, str]:
    """The measured-ε and δ cells of a group: mean over seeds, per privacy level."""
    eps_parts, delta_parts = [], []
    for level in _levels(group.mechanism):
        mean, _, n = mean_std([num(r.get(f"epsilon_{level}")) for r in group.rows])
        if not n:
            continue
        eps_parts.append(f"{mean:.3f} ({level})")
        deltas = sorted({d for r in group.rows if math.isfinite(d := num(r.get(f"delta_{level}")))})
        delta_parts.append(" / ".join(f"{d:g}" for d in deltas) or "—")
    return "; ".join(eps_parts) or "—", "; ".join(delta_parts) or "—"


def _accounting(group: Group) -> str:
    if group.mechanism == "none":
        return "—"
    names = sorted({str(r.get(ACCOUNTING) or NOT_RECORDED) for r in group.rows})
    return " / ".join(names)


def _accuracy(group: Group, key: str) -> str:
    text = mean_std_text([num(r.get(key)) for r in group.rows])
    worst = [num(r.get("worst_client_accuracy")) for r in group.rows]
    if key == "student_accuracy" and group.method == "local" and any(map(math.isfinite, worst)):
        text += f" (worst client {mean_std(worst)[0]:.4f})"
    return text


def _mean_cell(group: Group, key: str, fmt: str) -> str:
    mean, _, n = mean_std([num(r.get(key)) for r in group.rows])
    return format(mean, fmt) if n else "—"


def results_table(rows: list[dict[str, Any]]) -> str:
    """The full Markdown table of a sweep: one line per group of seeds.

    Columns: method, privacy mechanism, target ε, setting (only when some group has
    one), test accuracy (mean ± std over seeds; ``local`` adds its worst client),
    validation accuracy (only when a ``val_accuracy`` column exists), seeds, measured ε
    per privacy level (mean over seeds), its δ, the accountant and neighbouring relation
    (the ``accounting`` key of the rows, ``not recorded`` where absent), uplink bytes per
    client-round, uplink bytes per run, wall seconds per run (means over seeds).

    Parameters
    ----------
    rows : list of dict
        ``results.csv`` rows; only ``status == "done"`` rows count.

    Returns
    -------
    str
        The table, one line per group, ending in a newline.
    """
    groups = groups_of(rows)
    with_setting = any(g.setting for g in groups)
    with_val = any(math.isfinite(num(r.get("val_accuracy"))) for r in rows)
    head = ["method", "privacy", "target ε"] + (["setting"] if with_setting else [])
    head += ["test accuracy (mean ± std)"]
    head += ["val accuracy (mean ± std)"] if with_val else []
    head += ["seeds", "measured ε", "δ", "accountant (neighbours)"]
    head += ["uplink B / client-round", "uplink B / run", "wall s / run"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for g in groups:
        eps, delta = _measured(g)
        cells = [g.method, g.mechanism, eps_text(g.target_epsilon)]
        cells += [g.setting or "—"] if with_setting else []
        cells += [_accuracy(g, "student_accuracy")]
        cells += [_accuracy(g, "val_accuracy")] if with_val else []
        cells += [str(len(g.rows)), eps, delta, _accounting(g)]
        cells += [
            _mean_cell(g, "bytes_up_per_client_round", ",.0f"),
            _mean_cell(g, "bytes_up", ",.0f"),
            _mean_cell(g, "wall_seconds", ".1f"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def series_name(method: str, mechanism: str) -> str:
    """Row label of the headline table, e.g. ``fedkd, dpsgd (example-level)``."""
    if mechanism == "none":
        return f"{method}, no DP"
    return f"{method}, {mechanism} ({' + '.join(_levels(mechanism))}-level)"


def _pick(candidates: list[Group]) -> Group:
    """The group a headline cell shows: the only one, or the best on validation accuracy."""
    if len(candidates) == 1:
        return candidates[0]
    scored = [(mean_std([num(r.get("val_accuracy")) for r in g.rows]), g) for g in candidates]
    if any(n < len(g.rows) for (_, _, n), g in scored):
        g = candidates[0]
        raise TableError(
            f"headline table: {len(candidates)} settings of {series_name(g.method, g.mechanism)}"
            f" at target ε = {eps_text(g.target_epsilon)} and no val_accuracy to choose among"
            " them (a choice on test accuracy is not made)"
        )
    return max(scored, key=lambda s: s[0][0])[1]


def headline_table(rows: list[dict[str, Any]], epsilons: list[float] | None = None) -> str:
    """Each method's accuracy at each target ε: one row per (method, mechanism).

    Columns are ``ε = 1``, ``ε = 2``, ... ``ε = ∞``. A cell is the test accuracy (mean ±
    std over seeds) of that method and mechanism at that target ε; where several settings
    were run, the one with the best mean validation accuracy (a choice on test accuracy is
    refused). ``—``: not run.

    Parameters
    ----------
    rows : list of dict
        ``results.csv`` rows.
    epsilons : list of float, optional
        The columns; default every target ε of the finished rows, ∞ last.

    Returns
    -------
    str
        The table, ending in a newline.

    Raises
    ------
    TableError
        If several settings compete for a cell and not all have a validation accuracy.
    """
    groups = groups_of(rows)
    cols = sorted(set(epsilons) if epsilons else {g.target_epsilon for g in groups})
    series: dict[tuple[str, str], dict[float, list[Group]]] = defaultdict(lambda: defaultdict(list))
    for g in groups:
        series[(g.method, g.mechanism)][g.target_epsilon].append(g)
    head = ["method"] + [f"ε = {eps_text(e)}" for e in cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (method, mech), by_eps in series.items():
        cells = [series_name(method, mech)]
        for e in cols:
            found = by_eps.get(e)
            cells.append(_accuracy(_pick(found), "student_accuracy") if found else "—")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
