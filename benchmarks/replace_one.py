"""Recompute the ε of committed sweep cells under the accounting fedkd uses now.

Cells run before fedkd accounted under replace-one (dataset sizes and the number of
clients are published, see docs/privacy.md) reported an add/remove ε. This script rebuilds
each private fedkd / central-dpsgd cell of a committed sweep, re-derives the noise the old
calibration chose for its target (Opacus PRV for DP-SGD, fedkd's former RDP search for the
Gaussian teacher and PATE, all add/remove), and recomputes the ε of exactly those releases
with the enforced PLD accountant under replace-one. dp-fedavg is left out: it stays an
add/remove baseline accounted by Flower (its cells were re-run separately).

    python benchmarks/replace_one.py simulations/configs/sweep_digits.yaml benchmarks/results/digits

prints a Markdown table: cell, reported ε, corrected ε, accuracy.
"""

from __future__ import annotations

import argparse
import csv
import functools
import math
import sys
from pathlib import Path
from unittest import mock

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fedkd.privacy.accounting import DEFAULT_ORDERS, pld_epsilon  # noqa: E402
from fedkd.privacy.ledger import Release  # noqa: E402


@functools.cache
def old_dpsgd_sigma(target: float, delta: float, q: float, steps: int) -> float:
    """σ of the former calibration (Opacus get_noise_multiplier, PRV, add/remove)."""
    from opacus.accountants.utils import get_noise_multiplier

    return float(
        get_noise_multiplier(
            target_epsilon=target,
            target_delta=delta,
            sample_rate=q,
            steps=steps,
            accountant="prv",
        )
    )


def _old_rdp(parts: list[tuple[float, float, int]], delta: float) -> float:
    from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

    orders = list(DEFAULT_ORDERS)
    total = np.zeros(len(orders))
    for z, q, count in parts:
        total += np.asarray(compute_rdp(q=q, noise_multiplier=z, steps=count, orders=orders))
    return float(get_privacy_spent(orders=orders, rdp=total, delta=delta)[0])


def _search(eps_of, target: float) -> float:
    lo, hi = 1e-2, 1.0
    while eps_of(hi) > target:
        lo, hi = hi, hi * 2
    while hi - lo > 1e-3 * hi:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if eps_of(mid) > target else (lo, mid)
    return hi


def _dpsgd(cfg, target: float, central: bool) -> float:
    from fedkd.clientdata import partitions_for, splits_for

    delta, b = cfg.privacy.delta, cfg.clients.batch_size
    if central:
        sizes = [len(splits_for(cfg.data, cfg.seed).y_private)]
        epochs = cfg.rounds
    else:
        sizes = [len(p) for p in partitions_for(cfg.data, cfg.seed, cfg.clients.num_clients)]
        epochs = cfg.rounds * cfg.clients.local_epochs
    worst = 0.0
    for n in sorted(set(sizes)):
        q, steps = 1.0 / math.ceil(n / b), epochs * math.ceil(n / b)
        sigma = old_dpsgd_sigma(target, delta, q, steps)
        rel = Release("dpsgd", "example", "c", 0, sigma, q, steps, population=n)
        worst = max(worst, pld_epsilon([rel], delta))
    return worst


def _client_level(cfg, target: float) -> float:
    c, p = cfg.clients, cfg.privacy
    q = c.sample_rate if c.sampling == "poisson" else 1.0
    delta = p.client_delta if p.client_delta is not None else p.delta
    n = c.num_clients
    if "gaussian" in p.mechanisms:
        sigma = _search(lambda z: _old_rdp([(z, q, cfg.rounds)], delta), target)
        releases = [
            Release("gaussian", "client", "s", r, sigma, q, 1, population=n)
            for r in range(cfg.rounds)
        ]
    else:
        m = cfg.distill.proxy_per_round
        thr = p.pate.threshold is not None

        def old(s: float) -> float:
            parts = [(s / math.sqrt(2), q, cfg.rounds * m)]
            return _old_rdp(parts + ([(s, q, cfg.rounds * m)] if thr else []), delta)

        sigma = _search(old, target)
        releases = [
            Release(
                "pate",
                "client",
                "s",
                r,
                sigma,
                q,
                m,
                sigma_threshold=sigma if thr else None,
                threshold_checks=m if thr else 0,
                population=n,
            )
            for r in range(cfg.rounds)
        ]
    return pld_epsilon(releases, delta)


def corrected(cell) -> float | None:
    """The replace-one PLD ε of a cell's releases, or None for a cell not handled here."""
    target = float(cell.values["epsilon"])
    mechs = cell.config.privacy.mechanisms
    if cell.method == "central-dpsgd":
        return _dpsgd(cell.config, target, central=True)
    if cell.method != "fedkd":
        return None
    if "dpsgd" in mechs:
        return _dpsgd(cell.config, target, central=False)
    return _client_level(cell.config, target)


def main(argv: list[str] | None = None) -> int:
    from fedkd.simulations.sweep_spec import expand, load_spec

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep")
    parser.add_argument("results", help="folder with the committed results.csv")
    args = parser.parse_args(argv)
    with open(Path(args.results) / "results.csv", newline="") as handle:
        rows = {r["cell"]: r for r in csv.DictReader(handle)}
    # The noise expand() would calibrate now is not used here: skip the searches.
    with (
        mock.patch("fedkd.simulations.baselines.calibrate.gaussian_sigma", return_value=1.0),
        mock.patch("fedkd.simulations.baselines.calibrate.pate_sigma", return_value=1.0),
    ):
        cells = expand(load_spec(args.sweep))
    print("| cell | reported ε (add/remove) | corrected ε (replace-one, PLD) | accuracy |")
    print("|---|---|---|---|")
    for cell in cells:
        row = rows.get(cell.name)
        if row is None or "epsilon" not in cell.values or math.isinf(float(cell.values["epsilon"])):
            continue
        new = corrected(cell)
        if new is None:
            continue
        old = row["epsilon_example"] or row["epsilon_client"]
        acc = float(row["student_accuracy"]) if row["student_accuracy"] else float("nan")
        print(f"| {cell.name} | {float(old):.3f} | {new:.3f} | {acc:.4f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
