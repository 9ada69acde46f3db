"""Robustness benchmark: adversarial clients under mean / median / trimmed mean; dropouts.

Digits, 20 clients, Dirichlet 0.5, quickstart settings otherwise, in-process grid.
Prints final student accuracy per (aggregation, adversarial fraction, attack) and with 30 %
of sampled clients dropping out each round.

    python benchmarks/robustness.py [--rounds 20] [--attack constant]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "simulations" / "configs" / "quickstart.yaml"


def run(out: Path, rounds: int, *sets: str) -> float:
    """Final student accuracy of one in-process run."""
    base = ["runtime.backend=inprocess", "clients.num_clients=20", f"rounds={rounds}"]
    cmd = [
        sys.executable,
        "-m",
        "fedkd.simulations.cli",
        "simulate",
        str(CONFIG),
        "--out",
        str(out),
    ]
    for s in (*base, *sets):
        cmd += ["--set", s]
    subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True)
    return json.loads((out / "DONE").read_text())["student_accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--attack", default="constant")
    args = parser.parse_args()
    rules = ("mean_probs", "median", "trimmed_mean")
    with tempfile.TemporaryDirectory() as tmp:
        print(f"digits, 20 clients, {args.rounds} rounds, attack '{args.attack}'")
        print(f"{'aggregation':14} {'clean':>7} {'20% adv':>8} {'loss (points)':>14}")
        for rule in rules:
            agg = f"distill.aggregation={rule}"
            clean = run(Path(tmp) / f"{rule}-0", args.rounds, agg)
            adv = run(
                Path(tmp) / f"{rule}-20",
                args.rounds,
                agg,
                "faults.adversarial_fraction=0.2",
                f"faults.attack={args.attack}",
            )
            print(f"{rule:14} {clean:>7.4f} {adv:>8.4f} {100 * (clean - adv):>14.1f}")
        drop = run(Path(tmp) / "drop", args.rounds, "faults.dropout=0.3")
        print(f"\n30% dropouts (quickstart aggregation): student accuracy {drop:.4f}")


if __name__ == "__main__":
    main()
