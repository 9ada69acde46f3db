"""Tune the ``central-dpsgd`` baseline on a validation split, then test the chosen setting.

For each cell (data set, target ε, neighbouring relation) the script trains every trial of
a small fixed grid on a stratified validation split carved (fixed seed) from the run's
pooled private data, picks the trial with the best final-epoch validation accuracy, and
then trains that setting on the whole private pool for seeds 0, 1, 2 and reports test
accuracy mean ± std. The test set is only evaluated for the chosen setting. σ is
calibrated to the cell's ε for every trial (its own steps and sampling rate), by fedkd's
PLD accountant under the cell's relation. Every trial and run goes through
:func:`fedkd.simulations.baselines.central.fit_dpsgd`, the code of ``fedkd baseline central-dpsgd``.

Grids (6 trials in every cell; momentum 0.9 throughout):

* digits (scikit-learn 8x8, MLP 64-128-10 student, the quickstart's splits): B = 128,
  C = 1, lr in {0.05, 0.1, 0.2} x epochs in {20, 50}.
* fmnist (Fashion-MNIST, scattering J = 2, L = 8 -> 81x7x7, parameter-free
  GroupNorm(27) and a linear layer: the recipe of Tramèr & Boneh, "Differentially
  Private Learning Needs Better Features (or Much More Data)", ICLR 2021, and their
  public code github.com/ftramer/Handcrafted-DP): B = 8192, C = 0.1, lr in {4, 8, 16} x
  epochs in {20, 40}. The 3 final runs share the seed-0 splits (a new private pool
  would need minutes of scattering); the seed sets the initial weights, the noise is
  fresh OS entropy.

Run one data set per process (the scattering features of Fashion-MNIST are cached in
memory for the process, never on disk)::

    python benchmarks/central_dpsgd_tune.py digits
    python benchmarks/central_dpsgd_tune.py digits --relations none   # non-private central
    python benchmarks/central_dpsgd_tune.py fmnist
    python benchmarks/central_dpsgd_tune.py fmnist --fixed 16 40      # the paper's setting
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch
from fedkd.simulations.baselines.central import fit_central, fit_dpsgd
from fedkd.simulations.baselines.common import central_student, load_data

from fedkd.config import Config, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "simulations" / "configs"
VALIDATION_FRACTION = 0.1
VALIDATION_SEED = 20211
SEEDS = (0, 1, 2)
RELATIONS = ("add_remove", "replace_one")

SETUPS = {
    "digits": {
        "base": "quickstart.yaml",
        "set": [
            "distill.student=mlp",
            "runtime.backend=inprocess",
            "clients.batch_size=128",
            "privacy.dpsgd.max_grad_norm=1.0",
        ],
        "epsilons": (1.0, 3.0),
        "grid": {"clients.lr": (0.05, 0.1, 0.2), "rounds": (20, 50)},
        "validation_fraction": 0.2,
    },
    "fmnist": {
        "base": "fmnist_scattering.yaml",
        "set": [
            "distill.public_features=0",
            "distill.group_norm=27",
            "clients.batch_size=8192",
            "privacy.dpsgd.max_grad_norm=0.1",
        ],
        "epsilons": (3.0,),
        "grid": {"clients.lr": (4.0, 8.0, 16.0), "rounds": (20, 40)},
        "validation_fraction": VALIDATION_FRACTION,
        "same_split": True,
    },
}


def stratified_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, validation)``: ``round(fraction * n_c)`` of each class ``c`` go
    to validation, chosen by a generator seeded with ``seed``."""
    rng = np.random.default_rng(seed)
    val = []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        val.append(idx[: int(round(fraction * len(idx)))])
    val_idx = np.sort(np.concatenate(val))
    train_idx = np.setdiff1d(np.arange(len(y)), val_idx)
    return train_idx, val_idx


def cell_config(base: Config, trial: dict, epsilon: float, relation: str, seed: int) -> Config:
    """``base`` with a trial's settings, the cell's ε and relation, and ``seed``."""
    dpsgd = base.privacy.dpsgd
    if relation != "none":
        dpsgd = dataclasses.replace(
            dpsgd, target_epsilon=epsilon, noise_multiplier=None, relation=relation
        )
    clients = dataclasses.replace(base.clients, lr=trial["clients.lr"])
    return dataclasses.replace(
        base,
        seed=seed,
        rounds=trial["rounds"],
        clients=clients,
        privacy=dataclasses.replace(base.privacy, dpsgd=dpsgd),
    )


def _fit(relation: str, cfg: Config, model, x, y, x_eval, y_eval) -> tuple[float, str]:
    """Accuracy on ``(x_eval, y_eval)`` after training, and a note on σ and ε; relation
    ``"none"`` trains the non-private ``central`` baseline."""
    if relation == "none":
        return fit_central(cfg, model, x, y, x_eval, y_eval), ""
    res = fit_dpsgd(cfg, model, x, y, x_eval, y_eval)
    return res.accuracy, f"sigma={res.noise_multiplier:.3f} eps={res.epsilon:.3f} "


def tune(base: Config, setup: dict, epsilon: float, relation: str) -> dict:
    """Every trial of the grid on the validation split; returns the best trial."""
    _, data = central_student(base, load_data(base))
    train, val = stratified_split(data.y_private, setup["validation_fraction"], VALIDATION_SEED)
    x, y = data.x_private, data.y_private
    print(f"  validation split: {len(train)} train / {len(val)} validation (seed {base.seed})")
    keys = list(setup["grid"])
    best, best_acc = None, -1.0
    for values in itertools.product(*setup["grid"].values()):
        trial = dict(zip(keys, values, strict=True))
        cfg = cell_config(base, trial, epsilon, relation, base.seed)
        model, _ = central_student(cfg, load_data(cfg))  # a fresh head; features cached
        t0 = time.monotonic()
        acc, note = _fit(relation, cfg, model, x[train], y[train], x[val], y[val])
        print(
            f"  trial lr={trial['clients.lr']:<5g} epochs={trial['rounds']:<3d} {note}"
            f"val_acc={acc:.4f} ({time.monotonic() - t0:.0f} s)",
            flush=True,
        )
        if acc > best_acc:
            best, best_acc = trial, acc
    print(f"  chosen: {best} (validation accuracy {best_acc:.4f})")
    return best


def final(
    base: Config, setup: dict, trial: dict, epsilon: float, relation: str, seeds: list[int]
) -> list[float]:
    """Test accuracy of ``trial`` trained on the whole private pool, for each seed."""
    accs = []
    for seed in seeds:
        cfg = cell_config(base, trial, epsilon, relation, seed)
        # fmnist: seed-0 splits for every seed (the scattering of a new private pool takes
        # minutes on one core); the seed then sets the initial weights, the noise is fresh.
        split_cfg = base if setup.get("same_split") else cfg
        model, data = central_student(cfg, load_data(split_cfg))
        t0 = time.monotonic()
        acc, note = _fit(
            relation, cfg, model, data.x_private, data.y_private, data.x_test, data.y_test
        )
        print(
            f"  seed {seed}: n={len(data.y_private)} {note}test_acc={acc:.4f} "
            f"({time.monotonic() - t0:.0f} s)",
            flush=True,
        )
        accs.append(acc)
    return accs


def fixed(base: Config, setup: dict, args: argparse.Namespace) -> None:
    """Test one given setting (no tuning) in every cell, seed by seed: each seed's runs of
    all cells come before the next seed's, so a cut-short run still covers every cell."""
    trial = {"clients.lr": args.fixed[0], "rounds": int(args.fixed[1])}
    print(f"fixed setting, not tuned here: {trial}")
    cells = [(e, r) for e in setup["epsilons"] for r in args.relations]
    accs: dict[tuple, list[float]] = {cell: [] for cell in cells}
    for seed in args.seeds:
        for epsilon, relation in cells:
            print(f"cell eps={epsilon:g} relation={relation}")
            accs[(epsilon, relation)] += final(base, setup, trial, epsilon, relation, [seed])
    for (epsilon, relation), values in accs.items():
        spread = np.std(values, ddof=1) if len(values) > 1 else float("nan")
        print(
            f"RESULT {args.dataset} eps={epsilon:g} {relation}: {trial} test "
            f"{np.mean(values):.4f} ± {spread:.4f} ({len(values)} seeds)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=sorted(SETUPS))
    parser.add_argument(
        "--relations",
        nargs="+",
        default=list(RELATIONS),
        choices=[*RELATIONS, "none"],
        help="none: tune the non-private central baseline (same grid, one cell)",
    )
    parser.add_argument(
        "--fixed",
        nargs=2,
        type=float,
        metavar=("LR", "EPOCHS"),
        help="skip tuning: test this published setting (e.g. fmnist: 16 40, Tramèr & Boneh)",
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    setup = SETUPS[args.dataset]
    base = load_config(CONFIGS / setup["base"], [*setup["set"], "seed=0"])
    trials = int(np.prod([len(v) for v in setup["grid"].values()]))
    print(
        f"{args.dataset}: {trials} trials per cell; {platform.processor() or platform.machine()}"
        f", torch {torch.__version__}, {torch.get_num_threads()} thread"
    )
    t_start = time.monotonic()
    if args.fixed:
        fixed(base, setup, args)
        return
    cells = [(e, r) for e in setup["epsilons"] for r in args.relations if r != "none"]
    cells += [(math.inf, "none")] if "none" in args.relations else []
    for epsilon, relation in cells:
        t_cell = time.monotonic()
        print(f"cell eps={epsilon:g} delta={base.privacy.delta:g} relation={relation}")
        best = tune(base, setup, epsilon, relation)
        accs = final(base, setup, best, epsilon, relation, args.seeds)
        spread = np.std(accs, ddof=1) if len(accs) > 1 else float("nan")
        print(
            f"  RESULT {args.dataset} eps={epsilon:g} {relation}: lr={best['clients.lr']:g} "
            f"epochs={best['rounds']} test {np.mean(accs):.4f} ± {spread:.4f} "
            f"({len(accs)} seeds) cell wall {time.monotonic() - t_cell:.0f} s",
            flush=True,
        )
    print(f"total wall {time.monotonic() - t_start:.0f} s")


if __name__ == "__main__":
    main()
