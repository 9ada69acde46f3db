"""Privacy benchmark on digits: student accuracy against ε for the three privacy paths.

* ``dpsgd`` (example level): simulations/configs/dpsgd.yaml (10 clients, Dirichlet 0.5,
  linear heads on a PCA of the public proxy, one full-batch DP-SGD step per round, label
  propagation on the server), target ε = 1, 3, 8 at δ = 1e-5, noise calibrated once for
  the whole run (PLD accountant, replace-one), three seeds.
* ``gaussian`` and ``pate`` (client level): 100 clients (about 10 digits each), Dirichlet
  0.5, every client asked each round on 20 proxy rows, δ = 1e-5, noise calibrated for
  target ε = 2, 4, 8, labels propagated and sharpened on the server.

Every ε printed is the run's ``DONE`` summary, recomputed from its ``ledger.json``.

    python benchmarks/privacy.py [--rounds 20] [--client-rounds 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "simulations" / "configs" / "quickstart.yaml"
DPSGD = ROOT / "simulations" / "configs" / "dpsgd.yaml"


def run(out: Path, *sets: str, config: Path = CONFIG) -> tuple[dict, float]:
    """Summary and wall time of one in-process run."""
    cmd = [
        sys.executable,
        "-m",
        "fedkd.simulations.cli",
        "simulate",
        str(config),
        "--out",
        str(out),
        "--set",
        "runtime.backend=inprocess",
        "--set",
        "privacy.delta=1e-5",
    ]
    for s in sets:
        cmd += ["--set", s]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True)
    return json.loads((out / "DONE").read_text()), time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--client-rounds", type=int, default=10)
    parser.add_argument("--part", choices=("all", "dpsgd", "client"), default="all")
    parser.add_argument("--targets", default="1,3,8", help="DP-SGD target epsilons")
    parser.add_argument("--seeds", default="42,7,1", help="seeds of the DP-SGD part")
    parser.add_argument("--client-rows", type=int, default=20, help="proxy rows per round")
    parser.add_argument("--client-targets", default="2,4,8", help="client-level target ε")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.part in ("all", "dpsgd"):
            dpsgd_part(Path(tmp), args)
        if args.part in ("all", "client"):
            client_part(Path(tmp), args)


def dpsgd_part(tmp: Path, args: argparse.Namespace) -> None:
    """Example-level DP-SGD at each target ε (simulations/configs/dpsgd.yaml), over seeds."""
    seeds = [int(x) for x in args.seeds.split(",")]
    print(
        f"dpsgd, digits, 10 clients, {args.rounds} rounds, delta 1e-5 (dpsgd.yaml), seeds {seeds}"
    )
    print(
        f"{'target eps':>10} {'eps (ledger)':>12} {'student acc per seed':>28} "
        f"{'mean':>6} {'std':>6}"
    )
    cells = [("inf", "privacy.mechanisms=[]")] + [
        (t, f"privacy.dpsgd.target_epsilon={t}") for t in args.targets.split(",")
    ]
    for target, setting in cells:
        accs, eps = [], []
        for seed in seeds:
            s, _ = run(
                tmp / f"dp{target}-{seed}",
                f"rounds={args.rounds}",
                f"seed={seed}",
                setting,
                config=DPSGD,
            )
            accs.append(s["student_accuracy"])
            eps.append(s.get("epsilon_example") or 0.0)
        per_seed = " ".join(f"{a:.4f}" for a in accs)
        eps_txt = "-" if target == "inf" else f"{max(eps):.3f}"
        print(
            f"{target:>10} {eps_txt:>12} {per_seed:>28} {statistics.mean(accs):>6.4f} "
            f"{statistics.pstdev(accs):>6.4f}",
            flush=True,
        )


def client_part(tmp: Path, args: argparse.Namespace) -> None:
    """Client-level Gaussian and PATE with 100 clients (quickstart.yaml otherwise).

    Every client answers every round (q = 1) on ``--client-rows`` proxy rows; the noise is
    calibrated for each target ε over the planned releases (the sweep's calibration), and
    the server propagates and sharpens the labels it releases (post-processing).
    """
    from fedkd.simulations.baselines.calibrate import gaussian_sigma, pate_sigma

    rows, rounds = args.client_rows, args.client_rounds
    common = (
        "clients.num_clients=100",
        f"rounds={rounds}",
        "distill.codec=fp16",
        f"distill.proxy_per_round={rows}",
        "distill.propagate_neighbors=5",
        "distill.sharpen=4",
    )
    clip = round(rows**0.5, 3)  # a probability row has L2 norm <= 1: no matrix is clipped
    print(f"\nclient level, 100 clients, {rounds} rounds x {rows} proxy rows, delta 1e-5")
    print(f"{'mechanism':10} {'sigma':>7} {'eps (ledger)':>12} {'student acc':>11} {'wall s':>7}")
    s, wall = run(tmp / "np100", *common)
    print(f"{'none':10} {'-':>7} {'-':>12} {s['student_accuracy']:>11.4f} {wall:>7.1f}", flush=True)
    for target in (float(t) for t in args.client_targets.split(",")):
        sigma = gaussian_sigma(target, 1e-5, rounds, 1.0)
        s, wall = run(
            tmp / f"g{target}",
            *common,
            "privacy.mechanisms=[gaussian]",
            f"privacy.gaussian.noise_multiplier={sigma}",
            f"privacy.gaussian.clip_norm={clip}",
        )
        print(
            f"{'gaussian':10} {sigma:>7.3f} {s['epsilon_client']:>12.3f} "
            f"{s['student_accuracy']:>11.4f} {wall:>7.1f}",
            flush=True,
        )
    for target in (float(t) for t in args.client_targets.split(",")):
        sigma = pate_sigma(target, 1e-5, rounds, rows, 1.0, threshold=False)
        s, wall = run(
            tmp / f"p{target}",
            *common,
            "privacy.mechanisms=[pate]",
            f"privacy.pate.sigma={sigma}",
        )
        print(
            f"{'pate':10} {sigma:>7.3f} {s['epsilon_client']:>12.3f} "
            f"{s['student_accuracy']:>11.4f} {wall:>7.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
