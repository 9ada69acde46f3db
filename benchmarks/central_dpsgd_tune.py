"""Tune the ``central-dpsgd`` baseline on a validation split, then test the chosen setting.

For each cell (data set, target ε, neighbouring relation) the script trains every trial of
a small fixed grid on a stratified validation split carved (fixed seed) from the run's
pooled private data, picks the trial with the best final-epoch validation accuracy, and
then trains that setting on the whole private pool for seeds 0, 1, 2 and reports test
accuracy mean ± std. The test set is only evaluated for the chosen setting. σ is
calibrated to the cell's ε for every trial (its own steps and sampling rate), by fedkd's
PLD accountant under the cell's relation. Every trial and run goes through
:func:`fedkd.simulations.baselines.central.fit_dpsgd`, the code of ``fedkd baseline central-dpsgd``.

Grids (momentum 0.9 throughout; the same trials in every cell of a data set):

* digits (scikit-learn 8x8, MLP 64-128-10 student, the quickstart's splits: 1,005 private
  examples): the full grid B in {64, 128, 256} x lr in {0.02, 0.05, 0.1} x C in {0.5, 1,
  2} x epochs in {30, 60, 100}, 81 trials in every cell, each run once on the 806 / 199
  split; the 8 best are then scored by stratified 5-fold cross-validation over the whole
  1,005 (every example validated once) and the best mean chosen: 121 runs per cell.
  Earlier passes, kept for the record: 24 of the 81 points of a grid with lr in {0.03,
  0.1, 0.3} (``trials`` with :data:`GRID_SEED`, commit 7a68d96); the 81 points run once
  (commit 60d0b08); the 8 best re-run 3 times on the same split (commit dd0f717).
* digits-anchor: the same 81 trials on the split of the published anchors instead: a
  plain stratified 80/20 split of all 1,797 digits (1,438 train, 359 test, no public
  proxy); validation carved from the training side as for digits.
* digits-pca: as digits (same 81 trials and cross-validation), with the student's inputs
  a 24-dim whitened PCA fitted on the public proxy images, as in fedkd's own DP-SGD recipe
  (``dpsgd.yaml``): the public data fedkd uses, given to the baseline as well.
* fmnist (Fashion-MNIST, scattering J = 2, L = 8 -> 81x7x7, parameter-free
  GroupNorm(27) and a linear layer: the recipe of Tramèr & Boneh, "Differentially
  Private Learning Needs Better Features (or Much More Data)", ICLR 2021, and their
  public code github.com/ftramer/Handcrafted-DP): B = 8192, C = 0.1, lr in {4, 8, 16} x
  epochs in {20, 40} (6 trials). The 3 final runs share the seed-0 splits (a new private
  pool would need minutes of scattering); the seed sets the initial weights, the noise
  is fresh OS entropy. Scattering features are cached on disk outside the repository
  (``central_dpsgd_data.cache_features_on_disk``).
* fmnist-edge: as fmnist with lr in {16, 32} x epochs in {40, 80} (4 trials), the step
  beyond the corner that fmnist's grid chose under add/remove.

Run one data set per process, one process at a time::

    python benchmarks/central_dpsgd_tune.py digits
    python benchmarks/central_dpsgd_tune.py digits-anchor --relations add_remove
    python benchmarks/central_dpsgd_tune.py digits-pca --relations add_remove
    python benchmarks/central_dpsgd_tune.py digits --relations none   # non-private central
    python benchmarks/central_dpsgd_tune.py fmnist --relations add_remove
    python benchmarks/central_dpsgd_tune.py fmnist-edge --relations add_remove
    python benchmarks/central_dpsgd_tune.py fmnist --fixed 16 40      # the paper's setting
"""

from __future__ import annotations

import argparse
import math
import platform
import time

import numpy as np
import torch
from central_dpsgd_data import cache_features_on_disk, stratified_folds, stratified_split
from central_dpsgd_setups import (
    CONFIGS,
    RELATIONS,
    SEEDS,
    SETUPS,
    VALIDATION_SEED,
    cell_config,
    describe,
    grid_trials,
    pool,
)
from fedkd.simulations.baselines.central import fit_central, fit_dpsgd

from fedkd.config import Config, load_config


def _fit(relation: str, cfg: Config, model, x, y, x_eval, y_eval) -> tuple[float, str]:
    """Accuracy on ``(x_eval, y_eval)`` after training, and a note on σ and ε; relation
    ``"none"`` trains the non-private ``central`` baseline."""
    if relation == "none":
        return fit_central(cfg, model, x, y, x_eval, y_eval), ""
    res = fit_dpsgd(cfg, model, x, y, x_eval, y_eval)
    return res.accuracy, f"sigma={res.noise_multiplier:.3f} eps={res.epsilon:.3f} "


def _validate(base, setup, trial, epsilon, relation, seed, split) -> float:
    """Validation accuracy of one run of ``trial`` (``seed`` sets the initial weights)."""
    x, y, train, val = split
    cfg = cell_config(base, trial, epsilon, relation, seed)
    model, _ = pool(cfg, setup, base.seed)  # a fresh student; features cached
    t0 = time.monotonic()
    acc, note = _fit(relation, cfg, model, x[train], y[train], x[val], y[val])
    print(
        f"  trial {describe(trial)} seed={seed} {note}val_acc={acc:.4f} "
        f"({time.monotonic() - t0:.0f} s)",
        flush=True,
    )
    return acc


def _confirm(base, setup, trials, runs, epsilon, relation, split) -> dict[int, list[float]]:
    """Second stage of :func:`tune` for the k best of ``runs``: ``confirm = (k, r)`` runs
    each r more times on the same split (other initial weights, fresh noise) and keeps all
    1 + r runs; ``confirm_cv = (k, f)`` scores each by stratified f-fold cross-validation
    over the whole training side instead (every example validated once)."""
    k, r = setup.get("confirm_cv") or setup["confirm"]
    top = sorted(sorted(range(len(trials)), key=lambda i: -runs[i][0])[:k])
    x, y = split[:2]
    if "confirm_cv" in setup:
        print(f"  confirming the {k} best by {r}-fold cross-validation on {len(y)} examples")
        folds = stratified_folds(y, r, VALIDATION_SEED)
        return {
            i: [
                _validate(base, setup, trials[i], epsilon, relation, base.seed, (x, y, *fold))
                for fold in folds
            ]
            for i in top
        }
    print(f"  confirming the {k} best, {r} more runs each")
    return {
        i: runs[i]
        + [
            _validate(base, setup, trials[i], epsilon, relation, base.seed + 1000 + j, split)
            for j in range(1, r + 1)
        ]
        for i in top
    }


def tune(base: Config, setup: dict, epsilon: float, relation: str) -> dict:
    """Every trial on the validation split (carved from the seed-0 training side), once;
    with ``confirm`` or ``confirm_cv`` the best are scored again (:func:`_confirm`) and
    ranked by their mean. Returns the first trial with the best (mean) final-epoch
    validation accuracy."""
    _, (x, y, _, _) = pool(base, setup, base.seed)
    train, val = stratified_split(y, setup["validation_fraction"], VALIDATION_SEED)
    split = (x, y, train, val)
    print(f"  validation split: {len(train)} train / {len(val)} validation (seed {base.seed})")
    trials = grid_trials(setup)
    runs = [[_validate(base, setup, t, epsilon, relation, base.seed, split)] for t in trials]
    if "confirm" in setup or "confirm_cv" in setup:
        runs = _confirm(base, setup, trials, runs, epsilon, relation, split)
    else:
        runs = dict(enumerate(runs))
    scores = {i: float(np.mean(v)) for i, v in runs.items()}
    best = max(sorted(scores), key=lambda i: scores[i])
    print(
        f"  chosen: {describe(trials[best])} (validation accuracy "
        f"{scores[best]:.4f} over {len(runs[best])} run(s))"
    )
    return trials[best]


def final(
    base: Config, setup: dict, trial: dict, epsilon: float, relation: str, seeds: list[int]
) -> list[float]:
    """Test accuracy of ``trial`` trained on the whole training pool, for each seed."""
    accs = []
    for seed in seeds:
        cfg = cell_config(base, trial, epsilon, relation, seed)
        # fmnist: seed-0 splits for every seed (a new private pool means minutes of
        # scattering); the seed then sets the initial weights, the noise is fresh.
        model, (x, y, x_test, y_test) = pool(
            cfg, setup, base.seed if setup.get("same_split") else seed
        )
        t0 = time.monotonic()
        acc, note = _fit(relation, cfg, model, x, y, x_test, y_test)
        print(
            f"  seed {seed}: n={len(y)} {note}test_acc={acc:.4f} ({time.monotonic() - t0:.0f} s)",
            flush=True,
        )
        accs.append(acc)
    return accs


def _result(name: str, epsilon: float, relation: str, trial: dict, accs: list[float]) -> str:
    spread = np.std(accs, ddof=1) if len(accs) > 1 else float("nan")
    return (
        f"RESULT {name} eps={epsilon:g} {relation}: {describe(trial)} test "
        f"{np.mean(accs):.4f} ± {spread:.4f} ({len(accs)} seeds: "
        + ", ".join(f"{a:.4f}" for a in accs)
        + ")"
    )


def fixed(base: Config, setup: dict, args: argparse.Namespace) -> None:
    """Test one given setting (no tuning) in every cell, seed by seed: each seed's runs of
    all cells come before the next seed's, so a cut-short run still covers every cell."""
    trial = {"clients.lr": args.fixed[0], "rounds": int(args.fixed[1])}
    print(f"fixed setting, not tuned here: {describe(trial)}")
    cells = [(e, r) for e in setup["epsilons"] for r in args.relations]
    accs: dict[tuple, list[float]] = {cell: [] for cell in cells}
    for seed in args.seeds:
        for epsilon, relation in cells:
            print(f"cell eps={epsilon:g} relation={relation}")
            accs[(epsilon, relation)] += final(base, setup, trial, epsilon, relation, [seed])
    for (epsilon, relation), values in accs.items():
        print(_result(args.dataset, epsilon, relation, trial, values))


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
    parser.add_argument("--epsilons", nargs="+", type=float, help="default: the data set's")
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
    setup = dict(SETUPS[args.dataset])
    if args.epsilons:
        setup["epsilons"] = tuple(args.epsilons)
    if setup.get("disk_cache"):
        cache_features_on_disk()
    base = load_config(CONFIGS / setup["base"], [*setup["set"], "seed=0"])
    print(
        f"{args.dataset}: {len(grid_trials(setup))} trials per cell; "
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread"
    )
    for trial in grid_trials(setup):
        print(f"  grid: {describe(trial)}")
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
        print(
            "  "
            + _result(args.dataset, epsilon, relation, best, accs)
            + f" cell wall {time.monotonic() - t_cell:.0f} s",
            flush=True,
        )
    print(f"total wall {time.monotonic() - t_start:.0f} s")


if __name__ == "__main__":
    main()
