"""The issue-15 table from ``distill_diagnostics.py`` outputs: fedkd next to FedAvg.

Each argument is ``LABEL=PATH``: a row label and a ``diagnostics.json`` written by
``benchmarks/distill_diagnostics.py`` (or the folder holding it), or a ``fedkd tune``
folder (or its ``results.csv``), whose non-private ``fedkd`` and ``fedavg`` final runs make
the row (each tuned on validation by the same protocol). Prints a Markdown table,
one row per file: FedAvg's and fedkd's final-round test accuracy (mean ± sample standard
deviation over the file's seeds), their difference, fedkd's uplink bytes per client-round
as a share of FedAvg's, the clients' architectures, the number of seeds, the wall time of
the script and the command that produced the file.

    .venv/bin/python benchmarks/distill_table.py "digits=/tmp/d/diagnostics.json" \\
        "breast cancer=/tmp/bc" "synthetic=/tmp/syn"
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from pathlib import Path
from typing import Any

SCRIPT = ".venv/bin/python benchmarks/distill_diagnostics.py"
CONFIGS = Path(__file__).resolve().parents[1] / "simulations" / "configs"


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
    return _figures(
        label,
        fedkd,
        fedavg,
        up_kd / up_avg,
        float(diag.get("wall_s", float("nan"))),
        ", ".join(diag.get("models", [])) or "?",
        f"{SCRIPT} {' '.join(argv)}" if argv is not None else "(not recorded)",
    )


def _figures(
    label: str,
    fedkd: list[float],
    fedavg: list[float],
    uplink: float,
    wall_s: float,
    models: str,
    command: str,
) -> dict[str, Any]:
    """A table row from per-seed accuracies paired by seed (see :func:`table_row`)."""
    return {
        "label": label,
        "fedavg": _mean_sd(fedavg),
        "fedkd": _mean_sd(fedkd),
        "diff": statistics.fmean(k - a for k, a in zip(fedkd, fedavg, strict=True)),
        "uplink": uplink,
        "seeds": len(fedkd),
        "wall_s": wall_s,
        "models": models,
        "command": command,
    }


def tune_row(label: str, rows: list[dict[str, str]], models: str, command: str) -> dict[str, Any]:
    """The figures of a ``fedkd tune`` folder's ``results.csv`` (as :func:`table_row`).

    Parameters
    ----------
    label : str
        The row's name.
    rows : list of dict
        The rows of ``results.csv``; the finished non-private runs of methods ``fedkd`` and
        ``fedavg`` (one series each) are read, paired by seed.
    models, command : str
        The clients' architectures and the command that made the folder.

    Returns
    -------
    dict
        As :func:`table_row`; ``wall_s`` is the two methods' final runs, summed.
    """
    by: dict[str, dict[int, dict[str, str]]] = {"fedkd": {}, "fedavg": {}}
    series: dict[str, set[str]] = {"fedkd": set(), "fedavg": set()}
    for r in rows:
        if r["method"] in by and r["mechanism"] == "none" and r["status"] == "done":
            by[r["method"]][int(r["seed"])] = r
            series[r["method"]].add(r["series"])
    for method, names in series.items():
        if len(names) > 1:
            raise ValueError(f"{label}: more than one non-private {method} series: {sorted(names)}")
    seeds = sorted(set(by["fedkd"]) & set(by["fedavg"]))
    if not seeds:
        raise ValueError(f"{label}: no seed with both a finished fedkd and fedavg run")
    acc = {m: [float(by[m][s]["student_accuracy"]) for s in seeds] for m in by}
    up = {
        m: statistics.fmean(float(by[m][s]["bytes_up_per_client_round"]) for s in seeds) for m in by
    }
    wall = sum(float(by[m][s]["wall_seconds"]) for m in by for s in seeds)
    return _figures(
        label, acc["fedkd"], acc["fedavg"], up["fedkd"] / up["fedavg"], wall, models, command
    )


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


def _tune_models(folder: Path) -> str:
    """The fedkd clients' architectures, from a final run's saved config."""
    import yaml

    for cfg in sorted(folder.glob("series=fedkd__*__seed=*/config.yaml")):
        return ", ".join(yaml.safe_load(cfg.read_text())["clients"]["models"])
    tune = folder / "tune.yaml"  # a committed folder keeps no runs: the tune file's config
    if tune.is_file():
        spec = yaml.safe_load(tune.read_text())
        models = (spec.get("set") or {}).get("clients.models")
        base = CONFIGS / str(spec.get("base", ""))
        if models is None and base.is_file():
            models = (yaml.safe_load(base.read_text()).get("clients") or {}).get("models")
        if models:
            return ", ".join(models)
    return "?"


def _row(spec: str) -> dict[str, Any]:
    label, sep, path = spec.partition("=")
    if not sep:
        raise ValueError(f"expected LABEL=PATH, got {spec!r}")
    p = Path(path)
    if p.is_dir() and (p / "results.csv").is_file() and not (p / "diagnostics.json").exists():
        p = p / "results.csv"
    if p.name == "results.csv" and p.is_file():
        with p.open(newline="") as f:
            rows = list(csv.DictReader(f))
        command = f"fedkd tune {p.parent / 'tune.yaml'} (the folder's copy of the tune file)"
        return tune_row(label, rows, _tune_models(p.parent), command)
    p = p / "diagnostics.json" if p.is_dir() else p
    if not p.is_file():
        raise ValueError(f"no diagnostics.json or tune results.csv at {path}")
    return table_row(label, json.loads(p.read_text()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", nargs="+", metavar="LABEL=PATH")
    args = parser.parse_args(argv)
    try:
        rows = [_row(spec) for spec in args.rows]
    except ValueError as err:
        parser.error(str(err))  # one line, exit code 2
    print(markdown(rows))


if __name__ == "__main__":
    main()
