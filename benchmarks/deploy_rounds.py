"""Per-round wall time: deployment with 3 SuperNodes on 127.0.0.1 vs simulation.

Runs the same fedkd config (quickstart, 3 clients, a few rounds) four ways and prints the
seconds of each round as the ServerApp measured them (``metrics.json``: from sending the
round's messages to the evaluated student, so server-side distillation is included):

* ``deploy-fast``: SuperLink (TLS, node auth) + 3 ``fedkd supernode`` (0.2 s polling,
  warm ClientApp fork server), ServerApp polling replies every 0.1 s;
* ``deploy-cold`` (``--cold``): ``fedkd supernode --cold``, short polling but Flower's
  own ``flwr-clientapp`` process per message;
* ``deploy-naive`` (``--naive``): the same SuperLink + 3 plain ``flower-supernode`` and
  the ServerApp polling every 3 s, i.e. Flower 1.42's defaults;
* ``sim-inprocess``: ``fedkd simulate --set runtime.backend=inprocess``;
* ``sim-ray`` (``--ray``): ``fedkd simulate`` on Flower's Ray simulation runtime.

Usage::

    python benchmarks/deploy_rounds.py --rounds 6 [--cold] [--naive] [--ray] [--json out.json]
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # the deploy tests' local-cluster harness

from deploy.cluster import (  # noqa: E402
    LocalDeployment,
    MissingExecutableError,
    console_script,
    wait_for,
)

CONFIG = REPO / "simulations" / "configs" / "quickstart.yaml"


def _seconds(run: Path) -> list[float]:
    rows = json.loads((run / "metrics.json").read_text())["rounds"]
    return [float(r["seconds"]) for r in rows]


def deploy(
    root: Path, overrides: list[str], naive: bool, timeout: float, warm: bool = True
) -> dict:
    """One deployment run; returns per-round seconds and the run's total wall time."""
    dep = LocalDeployment(root=root, app_dir=REPO, plain=naive, warm=warm)
    dep.env["FLWR_SUPEREXEC_TASK_POLL_INTERVAL"] = "1.0" if naive else "0.2"
    if naive:
        dep.env["FEDKD_GRID_POLL_SECONDS"] = "3"
    names = ["node0", "node1", "node2"]
    try:
        dep.make_keys(names)
        dep.start_superlink()
        for name in names:
            dep.register(name)
        nodes = [
            dep.start_supernode(name, f"partition-id={i} state-dir='{root / name}'")
            for i, name in enumerate(names)
        ]
        marker = "SuperNode ID:"
        for proc in nodes:
            wait_for(lambda p=proc: marker in p.text(), 120, proc, f"{proc.name} activation")
        if warm and not naive:  # the warm executor is ready once its fork server has preloaded
            for proc in nodes:
                wait_for(lambda p=proc: "warm executor ready" in p.text(), 120, proc, "warm")
        out = root / "run"
        t0 = time.monotonic()
        dep.run(f"out-dir='{out}' overrides='{';'.join(overrides)}'")
        wait_for(lambda: (out / "DONE").exists(), timeout, dep.procs[0], "run end")
        wall = time.monotonic() - t0
        return {"rounds": _seconds(out), "wall": wall}
    finally:
        dep.close()


def simulate(root: Path, overrides: list[str], backend: str) -> dict:
    """``fedkd simulate`` of the same config; per-round seconds from its metrics.json."""
    out = root / f"sim-{backend}"
    sets = [a for o in [*overrides, f"runtime.backend={backend}"] for a in ("--set", o)]
    t0 = time.monotonic()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "fedkd.simulations.cli",
            "simulate",
            str(CONFIG),
            *sets,
            "--out",
            str(out),
        ],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    return {"rounds": _seconds(out), "wall": time.monotonic() - t0}


def executables(naive: bool) -> dict[str, str]:
    """The console scripts the benchmark starts, found beside this interpreter or on PATH
    (the venv need not be activated); raises MissingExecutableError naming the first absent."""
    names = ["flower-superlink", "flower-superexec", "flwr", "fedkd"]
    if naive:
        names.append("flower-supernode")
    return {name: console_script(name) for name in names}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--cold", action="store_true", help="also fedkd supernode --cold")
    parser.add_argument("--naive", action="store_true", help="also Flower's defaults (slow)")
    parser.add_argument("--ray", action="store_true", help="also the Ray simulation")
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument(
        "--check", action="store_true", help="only find the executables it needs, then exit"
    )
    args = parser.parse_args()
    try:
        found = executables(args.naive)
    except MissingExecutableError as err:
        sys.stderr.write(f"deploy_rounds.py: error: {err}\n")
        return 2
    if args.check:
        print("\n".join(f"{name}: {path}" for name, path in found.items()))
        return 0
    overrides = [f"rounds={args.rounds}", "clients.num_clients=3"]
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="fedkd-bench-") as tmp:
        root = Path(tmp)
        results["deploy-fast"] = deploy(root / "fast", overrides, False, 60 * args.rounds)
        if args.cold:
            results["deploy-cold"] = deploy(
                root / "cold", overrides, False, 90 * args.rounds, warm=False
            )
        if args.naive:
            results["deploy-naive"] = deploy(root / "naive", overrides, True, 90 * args.rounds)
        results["sim-inprocess"] = simulate(root, overrides, "inprocess")
        if args.ray:
            results["sim-ray"] = simulate(root, overrides, "ray")
    print(f"quickstart, 3 clients, {args.rounds} rounds; seconds per round (ServerApp clock)")
    print(f"{'mode':<15} {'median':>7} {'mean':>7} {'max':>7}  {'wall':>6}  rounds")
    for mode, res in results.items():
        secs = res["rounds"]
        print(
            f"{mode:<15} {statistics.median(secs):7.2f} {statistics.mean(secs):7.2f} "
            f"{max(secs):7.2f}  {res['wall']:6.1f}  " + " ".join(f"{s:.2f}" for s in secs)
        )
    print("target: <= 3 s per round with 3 SuperNodes (deploy-fast)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
