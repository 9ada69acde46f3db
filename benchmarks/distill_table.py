"""The issue-15 table from ``distill_diagnostics.py`` outputs: fedkd next to FedAvg.

Each argument is ``LABEL=PATH``: a row label and a ``diagnostics.json`` written by
``benchmarks/distill_diagnostics.py`` (or the folder holding it). Prints a Markdown table,
one row per file: FedAvg's and fedkd's final-round test accuracy (mean ± sample standard
deviation over the file's seeds), their difference, fedkd's uplink bytes per client-round
as a share of FedAvg's, the clients' architectures, the number of seeds, the wall time of
the script and the command that produced the file.

    .venv/bin/python benchmarks/distill_table.py "digits=/tmp/d/diagnostics.json" \\
        "breast cancer=/tmp/bc" "synthetic=/tmp/syn"
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

SCRIPT = ".venv/bin/python benchmarks/distill_diagnostics.py"


def _per_client(row: dict[str, Any]) -> float:
    ups = list(row.get("bytes_up_per_client", {}).values())
    return sum(ups) / len(ups) if ups else float("nan")


def _mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def table_row(label: str, diag: dict[str, Any]) -> dict[str, Any]:
    """The figures of one ``diagnostics.json`` (see the module docstring).

    Parameters
    ----------
    label : str
        The row's name (the data set and setting).
    diag : dict
        The parsed file: ``results`` (one entry per seed, each with the ``fedkd`` and
        ``fedavg`` metric rows), ``wall_s`` and, when recorded, ``argv`` and ``models``.

    Returns
    -------
    dict
        ``fedavg`` and ``fedkd`` (mean, sd) test accuracies, ``diff`` (mean of the
        per-seed differences), ``uplink`` (fedkd's mean uplink per client-round over
        FedAvg's), ``seeds``, ``wall_s``, ``models`` and ``command``.
    """
    results = diag["results"]
    fedkd = [r["fedkd"][-1]["student_accuracy"] for r in results]
    fedavg = [r["fedavg"][-1]["student_accuracy"] for r in results]
    up_kd = statistics.fmean(_per_client(x) for r in results for x in r["fedkd"])
    up_avg = statistics.fmean(_per_client(x) for r in results for x in r["fedavg"])
    argv = diag.get("argv")
    return {
        "label": label,
        "fedavg": _mean_sd(fedavg),
        "fedkd": _mean_sd(fedkd),
        "diff": statistics.fmean(k - a for k, a in zip(fedkd, fedavg, strict=True)),
        "uplink": up_kd / up_avg,
        "seeds": len(results),
        "wall_s": float(diag.get("wall_s", float("nan"))),
        "models": ", ".join(diag.get("models", [])) or "?",
        "command": f"{SCRIPT} {' '.join(argv)}" if argv is not None else "(not recorded)",
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    """The rows of :func:`table_row` as a Markdown table, commands listed below it."""
    lines = [
        "| data | client models | FedAvg | fedkd | fedkd − FedAvg | fedkd uplink / FedAvg's "
        "| seeds | wall |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        (fa, fa_sd), (kd, kd_sd) = r["fedavg"], r["fedkd"]
        lines.append(
            f"| {r['label']} | {r['models']} | {fa:.3f} ± {fa_sd:.3f} | {kd:.3f} ± {kd_sd:.3f} "
            f"| {r['diff']:+.3f} | {100 * r['uplink']:.1f} % | {r['seeds']} "
            f"| {r['wall_s']:.0f} s |"
        )
    lines.append("")
    lines.extend(f"* {r['label']}: `{r['command']}`" for r in rows)
    return "\n".join(lines)


def _load(spec: str) -> tuple[str, dict[str, Any]]:
    label, sep, path = spec.partition("=")
    if not sep:
        raise ValueError(f"expected LABEL=PATH, got {spec!r}")
    p = Path(path)
    p = p / "diagnostics.json" if p.is_dir() else p
    if not p.is_file():
        raise ValueError(f"no diagnostics.json at {path}")
    return label, json.loads(p.read_text())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", nargs="+", metavar="LABEL=PATH")
    args = parser.parse_args(argv)
    try:
        loaded = [_load(spec) for spec in args.rows]
    except ValueError as err:
        parser.error(str(err))  # one line, exit code 2
    print(markdown([table_row(label, diag) for label, diag in loaded]))


if __name__ == "__main__":
    main()
