"""Pool a finished run's local models by several rules; print their accuracy (diagnostic).

Reads the clients' last saved models from a run directory (as
``distill_diagnostics.local_models`` does) and scores, on the proxy and on the validation
split, the mean of their probabilities against label-count weighting: each client's
probability of class c weighted by its share of the federation's class-c examples (the
class-level ensemble of FedFTG, Zhang et al., CVPR 2022), on probabilities and on log
probabilities; and a client-side selector in the manner of Selective-FD (Shao, Wu and
Zhang, Nature Communications 2024): each client answers only the rows that lie as close to
its own private data as its private examples lie to each other (distance to the k-th
nearest private example at most the q-quantile of the private examples' own), and each row
is the mean over the clients that answered it (over all, if none did). Needs models on
fixed public features (every client shares one feature map, computed once here). Nothing
is chosen from these figures; the label counts and the selections it computes are private
statistics that fedkd does not release today. Two references close the table: the top-1
vote share (what the ``onebit`` codec sends), and FedAvg's aggregate of the same models,
their weights averaged with each client's example count (the models must share one
architecture; weights never leave a fedkd client, so this is only the yardstick).
``--distill`` then asks whether the round's distillation could keep what the ensemble knows:
a fresh student (the config's ``distill.student``) distils the mean of probabilities, and the
vote share, on the whole proxy at each ``--temperatures`` value for up to ``--epochs`` epochs,
and its best validation accuracy is printed (``proxy_ceiling.best_validation``).

    python benchmarks/ensemble_rules.py CONFIG RUN_DIR [--knn]
        [--distill [--temperatures 1 4] [--lr 0.03] [--epochs 40]]
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from distill_diagnostics import local_models  # noqa: E402
from proxy_ceiling import best_validation, fresh_student  # noqa: E402

from fedkd.aggregate import votes  # noqa: E402
from fedkd.clientdata import partitions_for, splits_for  # noqa: E402
from fedkd.config import load_config  # noqa: E402


def feats_of(feature_map: torch.nn.Module, x: np.ndarray) -> torch.Tensor:
    """Public features of ``x`` under the clients' shared feature map."""
    with torch.no_grad():
        return feature_map(torch.as_tensor(x, dtype=torch.float32))


def rules(probs: np.ndarray, counts: np.ndarray) -> dict[str, np.ndarray]:
    """(N, C) teacher scores of each rule from (K, N, C) probabilities and (K, C) counts."""
    share = counts / np.maximum(counts.sum(0, keepdims=True), 1)  # (K, C), columns sum to 1
    logp = np.log(np.clip(probs, 1e-12, 1))
    return {
        "mean of probabilities": probs.mean(0),
        "label-count weighted probabilities": (probs * share[:, None, :]).sum(0),
        "label-count weighted log probabilities": (logp * share[:, None, :]).sum(0),
    }


def prior_corrected(probs: np.ndarray, counts: np.ndarray, pseudo: float, power: float):
    """(K, N, C) each client's probabilities divided by its smoothed label prior, renormalised.

    A model trained on labels drawn with prior pi_k predicts about pi_k(c) p(x | c); dividing
    by pi_k^power (Menon et al., "Long-tail learning via logit adjustment", ICLR 2021) moves
    it towards balanced classes. The prior is smoothed with ``pseudo`` counts per class, so a
    class a client never saw is raised by a bounded factor only.
    """
    prior = (counts + pseudo) / (counts.sum(1, keepdims=True) + pseudo * counts.shape[1])
    adjusted = probs / prior[:, None, :] ** power
    return adjusted / adjusted.sum(2, keepdims=True)


def in_distribution(
    private: torch.Tensor, rows: torch.Tensor, quantiles: tuple[float, ...], k: int = 5
) -> np.ndarray:
    """(Q, N) bool: rows whose distance to the k-th nearest private example is in range.

    For each quantile the range is that quantile of the private examples' distances to
    their own k-th nearest other private example (so about ``1 - quantile`` of a client's
    own data would be refused); a client with at most ``k`` examples answers every row.
    """
    if len(private) <= k:
        return np.ones((len(quantiles), len(rows)), dtype=bool)
    own = torch.cdist(private, private).sort(1).values[:, k]  # column 0 is the example itself
    limits = torch.quantile(own, torch.tensor(quantiles))
    near = torch.cdist(rows, private).topk(k, 1, largest=False).values[:, k - 1]
    return (near[None, :] <= limits[:, None]).numpy()


def selected_mean(probs: np.ndarray, answers: np.ndarray) -> np.ndarray:
    """(N, C) mean over the clients that answered each row; all clients where none did."""
    w = answers.astype(np.float64)[:, :, None]  # (K, N, 1)
    n = w.sum(0)
    pooled = (probs * w).sum(0) / np.maximum(n, 1)
    return np.where(n > 0, pooled, probs.mean(0))


def score_table(
    probs: np.ndarray,
    counts: np.ndarray,
    y: np.ndarray,
    near: np.ndarray | None = None,
    quantiles: tuple[float, ...] = (),
) -> dict[str, np.ndarray]:
    """(N, C) scores of every rule, in print order, from (K, N, C) float64 probabilities.

    ``near`` is the (Q, K, N) k-NN answers for ``quantiles`` (none: that rule is left out).
    """
    table = rules(probs, counts)
    for q, answers in zip(quantiles, near if near is not None else [], strict=True):
        table[f"client-side selection, q={q} ({answers.mean():.0%} answered)"] = selected_mean(
            probs, answers
        )
    table["mean of log probabilities"] = np.log(np.clip(probs, 1e-12, 1)).mean(0)
    for pseudo in (1.0, 5.0, 20.0):
        for power in (0.5, 1.0):
            rule = f"prior-corrected mean, pseudo {pseudo:g}, power {power:g}"
            table[rule] = prior_corrected(probs, counts, pseudo, power).mean(0)
    holds = counts >= 0.02 * counts.sum(1, keepdims=True)  # (K, C)
    guess = probs.mean(0)
    for it in (1, 2, 3):
        # Each client answers the rows whose pooled label it holds 2 % of its data of.
        answers = holds[:, guess.argmax(1)]
        guess = selected_mean(probs, answers)
        table[f"selection by pooled class, pass {it} ({answers.mean():.0%} answered)"] = guess
    # Not a selector: a client answers the rows whose *true* class it holds 2 % of its data
    # of, which reads the rows' labels (docs/distillation.md says why it is no target).
    answers = holds[:, y]
    table[f"oracle selection by true class ({answers.mean():.0%} answered)"] = selected_mean(
        probs, answers
    )
    return table


def vote_share(probs: np.ndarray) -> np.ndarray:
    """(N, C) share of the K clients whose most probable class is each class."""
    return votes(probs) / probs.shape[0]


def weight_average(heads: list[torch.nn.Module], sizes: np.ndarray) -> torch.nn.Module:
    """A copy of ``heads[0]`` holding the ``sizes``-weighted mean of every head's weights."""
    w = torch.as_tensor(sizes / sizes.sum(), dtype=torch.float32)
    states = [h.state_dict() for h in heads]
    avg = {k: sum(wi * st[k].float() for wi, st in zip(w, states, strict=True)) for k in states[0]}
    out = copy.deepcopy(heads[0])
    out.load_state_dict(avg)
    return out.eval()


def main(argv: list[str] | None = None) -> None:
    """Print each rule's accuracy on the proxy and the validation split."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config", type=Path)
    p.add_argument("run", type=Path)
    p.add_argument("--knn", action="store_true", help="also the k-NN selector (slow)")
    p.add_argument("--distill", action="store_true", help="distil the ensemble into a student")
    p.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 4.0])
    p.add_argument("--lr", type=float, default=0.03)
    p.add_argument("--epochs", type=int, default=40)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    cfg = load_config(a.config)
    s = splits_for(cfg.data, cfg.seed)
    c = int(s.num_classes)
    parts = partitions_for(cfg.data, cfg.seed, cfg.clients.num_clients)
    models = local_models(cfg, a.run)
    if len(models) != len(parts):
        raise SystemExit(f"{a.run}: {len(models)} saved local models for {len(parts)} clients")
    if not all(isinstance(m, torch.nn.Sequential) for m in models):
        raise SystemExit(f"{a.config}: the clients' models must sit on fixed public features")
    counts = np.stack([np.bincount(s.y_private[i], minlength=c) for i in parts]).astype(float)
    shared = models[0][0]  # every client's feature map is the same
    private = [feats_of(shared, s.x_private[i]) for i in parts] if a.knn else []
    quantiles = (0.5, 0.7, 0.9) if a.knn else ()
    for name, x, y in (("proxy", s.x_proxy, s.y_proxy), ("validation", s.x_val, s.y_val)):
        feats = feats_of(shared, x)
        with torch.no_grad():
            probs = np.stack([torch.softmax(m[1](feats), 1).numpy() for m in models])
        near = None
        if a.knn:
            near = np.stack([in_distribution(f, feats, quantiles) for f in private], 1)
        table = score_table(probs.astype(np.float64), counts, y, near, quantiles)
        table["top-1 vote share"] = vote_share(probs)
        if len({tuple(m[1].state_dict()) for m in models}) == 1:
            with torch.no_grad():
                fedavg = weight_average([m[1] for m in models], counts.sum(1))(feats)
            table["FedAvg of the same models (weights; yardstick)"] = fedavg.numpy()
        for rule, scores in table.items():
            print(f"{name:10s}  {rule:40s}  {float((scores.argmax(1) == y).mean()):.4f}")
        if a.distill and name == "proxy":
            targets = {"mean of probabilities": probs.mean(0), "vote share": vote_share(probs)}
    if a.distill:
        distill_targets(cfg, s, targets, a.temperatures, a.lr, a.epochs)


def distill_targets(cfg, s, targets: dict[str, np.ndarray], temperatures, lr, epochs) -> None:
    """Print a fresh student's best validation accuracy distilling each proxy target."""
    features, initial = fresh_student(cfg, s)  # fixed features fitted once, inputs mapped once
    x, xv = s.x_proxy, s.x_val
    if features is not None:
        x, xv = features.transform_array(x), features.transform_array(xv)
    for t in temperatures:
        for rule, target in targets.items():
            target = np.asarray(target / target.sum(1, keepdims=True), np.float32)
            acc, epoch = best_validation(
                copy.deepcopy(initial),
                x,
                target,
                xv,
                s.y_val,
                lr=lr,
                epochs=epochs,
                seed=cfg.seed,
                temperature=t,
            )
            print(
                f"student distilling the {rule} on the whole proxy, T {t:g}, lr {lr:g}: "
                f"best validation {acc:.4f} (epoch {epoch})"
            )


if __name__ == "__main__":
    main()
