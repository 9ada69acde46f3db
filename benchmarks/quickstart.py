"""Quickstart benchmark: final accuracy, uplink bytes per client-round per codec, wall time.

Setting: digits, 10 heterogeneous clients (mlp, cnn, mlp_wide), Dirichlet 0.5, 20 rounds
(simulations/configs/quickstart.yaml). Each codec runs once on the in-process grid; the
int8 quickstart also runs end to end through ``fedkd simulate`` on Flower's Ray runtime,
timed as a user would time it.

    python benchmarks/quickstart.py [--skip-ray]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "simulations" / "configs" / "quickstart.yaml"
CODECS = ("fp32", "fp16", "int8", "onebit", "topk")


def run(out: Path, *sets: str) -> tuple[dict, list[dict], float]:
    """Run ``fedkd simulate`` and return its summary, metric rows and wall time."""
    cmd = [
        sys.executable,
        "-m",
        "fedkd.simulations.cli",
        "simulate",
        str(CONFIG),
        "--out",
        str(out),
    ]
    for s in sets:
        cmd += ["--set", s]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True)
    wall = time.perf_counter() - t0
    rows = json.loads((out / "metrics.json").read_text())["rounds"]
    return json.loads((out / "DONE").read_text()), rows, wall


def per_client_round(rows: list[dict]) -> float:
    """Mean uplink bytes of one client in one round."""
    ups = [v for r in rows for v in r["bytes_up_per_client"].values()]
    return sum(ups) / len(ups)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-ray", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{'codec':8} {'student acc':>11} {'uplink B/client-round':>22} {'wall s':>7}")
        for codec in CODECS:
            summary, rows, wall = run(
                Path(tmp) / codec, f"distill.codec={codec}", "runtime.backend=inprocess"
            )
            print(
                f"{codec:8} {summary['student_accuracy']:>11.4f} "
                f"{per_client_round(rows):>22.0f} {wall:>7.1f}"
            )
        if not args.skip_ray:
            summary, rows, wall = run(Path(tmp) / "ray")
            print(
                f"\nquickstart on Flower's Ray simulation runtime (int8): student accuracy "
                f"{summary['student_accuracy']:.4f}, uplink {per_client_round(rows):.0f} "
                f"B/client-round, wall {wall:.1f} s (command: fedkd simulate {CONFIG.name})"
            )


if __name__ == "__main__":
    main()
