"""The cells and grids of ``central_dpsgd_tune.py``: data sets, trials, configurations.

See ``central_dpsgd_tune.py`` for what each setup is and why.
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import numpy as np
import torch
from central_dpsgd_data import anchor_digits
from fedkd.simulations.baselines.common import central_student, load_data

from fedkd.config import Config

CONFIGS = Path(__file__).resolve().parents[1] / "simulations" / "configs"
VALIDATION_SEED = 20211
GRID_SEED = 14
SEEDS = (0, 1, 2)
RELATIONS = ("add_remove", "replace_one")

_DIGITS = {
    "base": "quickstart.yaml",
    "set": ["distill.student=mlp", "runtime.backend=inprocess"],
    "epsilons": (1.0, 3.0),
    "grid": {
        "clients.batch_size": (64, 128, 256),
        "clients.lr": (0.02, 0.05, 0.1),
        "privacy.dpsgd.max_grad_norm": (0.5, 1.0, 2.0),
        "rounds": (30, 60, 100),
    },
    "confirm_cv": (8, 5),
    "validation_fraction": 0.2,
}
SETUPS = {
    "digits": _DIGITS,
    "digits-anchor": {**_DIGITS, "anchor_split": True},
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
        "validation_fraction": 0.1,
        "same_split": True,
        "disk_cache": True,
    },
}
# digits with the student's inputs a 24-dim whitened PCA fitted on the public proxy images,
# as fedkd's DP-SGD recipe (dpsgd.yaml): the same grid and cross-validation as "digits".
SETUPS["digits-pca"] = {
    **_DIGITS,
    "set": [*_DIGITS["set"], "distill.public_features=24", "distill.augment=false"],
}
# fmnist's grid chose its corner (the largest lr and epochs): the next step out, 4 trials.
SETUPS["fmnist-edge"] = {
    **SETUPS["fmnist"],
    "grid": {"clients.lr": (16.0, 32.0), "rounds": (40, 80)},
}


def grid_trials(setup: dict) -> list[dict]:
    """The trials of a cell: the whole grid, or ``setup["trials"]`` of its points drawn
    without replacement by a generator seeded with :data:`GRID_SEED` (the same in every
    cell, so every cell gets the same tuning effort)."""
    keys = list(setup["grid"])
    points = [dict(zip(keys, v, strict=True)) for v in itertools.product(*setup["grid"].values())]
    if "trials" not in setup:
        return points
    pick = np.random.default_rng(GRID_SEED).choice(len(points), setup["trials"], replace=False)
    return [points[i] for i in sorted(pick)]


def cell_config(base: Config, trial: dict, epsilon: float, relation: str, seed: int) -> Config:
    """``base`` with a trial's settings, the cell's ε and relation, and ``seed``."""
    dpsgd = base.privacy.dpsgd
    if relation != "none":
        dpsgd = dataclasses.replace(
            dpsgd, target_epsilon=epsilon, noise_multiplier=None, relation=relation
        )
    if "privacy.dpsgd.max_grad_norm" in trial:
        dpsgd = dataclasses.replace(dpsgd, max_grad_norm=trial["privacy.dpsgd.max_grad_norm"])
    clients = dataclasses.replace(
        base.clients,
        lr=trial["clients.lr"],
        batch_size=trial.get("clients.batch_size", base.clients.batch_size),
    )
    return dataclasses.replace(
        base,
        seed=seed,
        rounds=trial["rounds"],
        clients=clients,
        privacy=dataclasses.replace(base.privacy, dpsgd=dpsgd),
    )


def pool(cfg: Config, setup: dict, split_seed: int) -> tuple[torch.nn.Module, list[np.ndarray]]:
    """A fresh student for ``cfg`` and ``[x_train, y_train, x_test, y_test]``: the pooled
    private data and test set of the splits drawn with ``split_seed``, or the anchors'
    80/20 split of all digits (``anchor_split``)."""
    split_cfg = dataclasses.replace(cfg, seed=split_seed)
    model, data = central_student(cfg, load_data(split_cfg))
    if setup.get("anchor_split"):
        return model, list(anchor_digits(split_seed))
    return model, [data.x_private, data.y_private, data.x_test, data.y_test]


def describe(trial: dict) -> str:
    """A trial's settings in one short line."""
    short = {"clients.batch_size": "B", "clients.lr": "lr", "privacy.dpsgd.max_grad_norm": "C"}
    return " ".join(f"{short.get(k, 'epochs')}={v:g}" for k, v in trial.items())
