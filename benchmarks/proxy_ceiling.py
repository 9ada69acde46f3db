"""What the student's architecture learns from the proxy's inputs with their true labels.

A diagnostic for docs/distillation.md: fedkd's student only ever sees the proxy rows, so one
reference for its ceiling is the same model trained with the true labels of those rows
(labels fedkd never has), next to the same model trained on the whole private pool (what
FedAvg's model can draw on) and on as many private rows as the proxy has. Each is trained
by SGD with momentum at a few learning rates, and the best validation accuracy over the
epochs is printed; the test split is not read. ``--mirror`` adds the proxy rows together
with their left-right mirror images (same labels): whether more public inputs, made from the
proxy itself, would raise that ceiling (for images whose classes survive a mirror).
``--soft-teacher`` asks what soft labels can add: the model trained on the whole private pool
(its best validation epoch, at the first learning rate) labels the proxy rows with its
probabilities, and a fresh student distils them (Hinton et al., 2015) at each temperature of
``--temperatures``: a teacher as good as the pooled data, seen through the proxy's inputs.

    python benchmarks/proxy_ceiling.py CONFIG [--epochs 40] [--lrs 0.01 0.03 0.1]
        [--mirror] [--only-proxy] [--soft-teacher [--temperatures 1 4]]
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np
import torch

from fedkd.clientdata import splits_for
from fedkd.config import load_config
from fedkd.distill import (
    evaluate,
    make_optimizer,
    predict_probs,
    train_distill,
    train_supervised,
)
from fedkd.features import PublicFeatures, build_client_model, feature_args, split_features


def best_validation(
    head: torch.nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    *,
    lr: float,
    epochs: int,
    seed: int,
    temperature: float = 1.0,
) -> tuple[float, int]:
    """Train ``head`` on (x, y) one epoch at a time; its best validation accuracy and epoch.

    ``y`` is either labels (N,), trained with cross-entropy, or teacher probabilities
    (N, C), distilled at ``temperature``. ``head`` is left with its best epoch's weights.
    """
    gen = torch.Generator().manual_seed(seed)
    opt = make_optimizer(head, lr)
    best, best_epoch, best_state = 0.0, 0, copy.deepcopy(head.state_dict())
    for epoch in range(1, epochs + 1):
        if y.ndim == 2:
            train_distill(
                head, opt, x, y, epochs=1, batch_size=64, temperature=temperature, generator=gen
            )
        else:
            train_supervised(head, opt, x, y, epochs=1, batch_size=64, generator=gen)
        acc = evaluate(head, x_val, y_val)[1]
        if acc > best:
            best, best_epoch, best_state = acc, epoch, copy.deepcopy(head.state_dict())
    head.load_state_dict(best_state)
    return best, best_epoch


def fresh_student(cfg, s) -> tuple[PublicFeatures | None, torch.nn.Module]:
    """A new ``distill.student`` for the splits ``s``: its fixed features and trainable head."""
    return split_features(
        build_client_model(
            cfg.distill.student,
            tuple(s.input_shape),
            int(s.num_classes),
            seed=cfg.seed,
            x_public=s.x_proxy,
            **feature_args(cfg.distill, "distill"),
        )
    )


def main(argv: list[str] | None = None) -> None:
    """Print the best validation accuracy of each training set and learning rate."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config", type=Path)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--lrs", type=float, nargs="+", default=[0.01, 0.03, 0.1])
    p.add_argument("--mirror", action="store_true", help="also proxy + mirrored proxy")
    p.add_argument("--only-proxy", action="store_true", help="skip the private-row sets")
    p.add_argument("--soft-teacher", action="store_true", help="distil a pooled-data model")
    p.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 4.0])
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    cfg = load_config(a.config)
    s = splits_for(cfg.data, cfg.seed)
    if s.x_val is None or len(s.x_val) == 0:
        raise SystemExit(f"{a.config}: needs data.validation_fraction > 0")
    features, initial = fresh_student(cfg, s)  # the fixed features are fitted once

    def fresh() -> torch.nn.Module:
        """A new head, as initialised from the seed."""
        return copy.deepcopy(initial)

    def inputs(x: np.ndarray) -> np.ndarray:
        return x if features is None else features.transform_array(x)

    x_val = inputs(s.x_val)
    pick = np.random.default_rng(cfg.seed).permutation(len(s.x_private))[: len(s.x_proxy)]
    sets = {f"proxy rows, true labels ({len(s.x_proxy)})": (s.x_proxy, s.y_proxy)}
    if a.mirror:
        both = np.concatenate([s.x_proxy, s.x_proxy[..., ::-1]])
        sets[f"proxy + mirrored, true labels ({len(both)})"] = (both, np.tile(s.y_proxy, 2))
    if not a.only_proxy:
        sets[f"private rows, as many ({len(pick)})"] = (s.x_private[pick], s.y_private[pick])
        sets[f"whole private pool ({len(s.x_private)})"] = (s.x_private, s.y_private)
    for name, (x, y) in sets.items():
        xf = inputs(x)
        for lr in a.lrs:
            head = fresh()
            acc, epoch = best_validation(
                head, xf, y, x_val, s.y_val, lr=lr, epochs=a.epochs, seed=cfg.seed
            )
            print(f"{name:38s}  lr {lr:<6g}  best validation {acc:.4f} (epoch {epoch})")
    if a.soft_teacher:
        teacher = fresh()
        acc, epoch = best_validation(
            teacher,
            inputs(s.x_private),
            s.y_private,
            x_val,
            s.y_val,
            lr=a.lrs[0],
            epochs=a.epochs,
            seed=cfg.seed,
        )
        print(f"teacher: whole private pool, lr {a.lrs[0]:g}, validation {acc:.4f} (epoch {epoch})")
        xf = inputs(s.x_proxy)
        probs = predict_probs(teacher, xf)
        print(f"teacher on the proxy rows: accuracy {np.mean(probs.argmax(1) == s.y_proxy):.4f}")
        for t in a.temperatures:
            for lr in a.lrs:
                head = fresh()
                acc, epoch = best_validation(
                    head,
                    xf,
                    probs,
                    x_val,
                    s.y_val,
                    lr=lr,
                    epochs=a.epochs,
                    seed=cfg.seed,
                    temperature=t,
                )
                name = f"proxy rows, pooled teacher, T {t:g}"
                print(f"{name:38s}  lr {lr:<6g}  best validation {acc:.4f} (epoch {epoch})")


if __name__ == "__main__":
    main()
