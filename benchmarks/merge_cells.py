"""Replace some cells of a committed sweep's results with re-run ones, and redo its table.

Used after the fixed-denominator fix of ``dp-fedavg``: only the DP-FedAvg cells of a sweep
were re-run (a reduced sweep with the same cell names), and their rows replace the old rows
of the committed ``results.csv``. ``results.md`` and ``accuracy_vs_epsilon.png`` are redrawn
from the merged rows; the per-round plots need the run folders of every cell and are left
as they were.

    python benchmarks/merge_cells.py benchmarks/results/digits \
        benchmarks/runs/digits-dpfedavg/results.csv --method dp-fedavg
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def merge(folder: Path, new_csv: Path, method: str) -> list[str]:
    """Replace ``folder/results.csv`` rows of ``method`` by those of ``new_csv``; return cells."""
    from fedkd.simulations.sweep_plots import plot_accuracy_vs_epsilon, summary_table

    with open(folder / "results.csv", newline="") as f:
        reader = csv.DictReader(f)
        columns, old = list(reader.fieldnames or []), list(reader)
    with open(new_csv, newline="") as f:
        new = {r["cell"]: r for r in csv.DictReader(f) if r["method"] == method}
    old_cells = {r["cell"] for r in old if r["method"] == method}
    if old_cells != set(new):
        raise SystemExit(f"cells differ: old {sorted(old_cells)} new {sorted(new)}")
    rows = [{k: new[r["cell"]].get(k, "") for k in columns} if r["cell"] in new else r for r in old]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    (folder / "results.csv").write_text(buf.getvalue())
    (folder / "results.md").write_text(summary_table(rows))
    plot_accuracy_vs_epsilon(rows, folder / "accuracy_vs_epsilon.png")
    return sorted(new)


def main() -> None:
    """Command line: ``merge_cells.py FOLDER NEW_CSV --method METHOD``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="committed results folder")
    parser.add_argument("new_csv", type=Path, help="results.csv of the re-run cells")
    parser.add_argument("--method", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cells = merge(args.folder, args.new_csv, args.method)
    logger.info("replaced %d cells in %s", len(cells), args.folder / "results.csv")


if __name__ == "__main__":
    main()
