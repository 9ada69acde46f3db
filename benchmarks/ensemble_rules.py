"""Pool a finished run's local models by several rules; print their accuracy (diagnostic).

Reads the clients' last saved models from a run directory (as
``distill_diagnostics.local_models`` does) and scores, on the proxy and on the validation
split, the mean of their probabilities against label-count weighting: each client's
probability of class c weighted by its share of the federation's class-c examples (the
class-level ensemble of FedFTG, Zhang et al., CVPR 2022), on probabilities and on log
probabilities. Needs models on fixed public features (every client shares one feature
map, computed once here). Nothing is chosen from these figures; the label counts it reads
are private statistics that fedkd does not release today.

    python benchmarks/ensemble_rules.py CONFIG RUN_DIR
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from distill_diagnostics import local_models  # noqa: E402

from fedkd.clientdata import partitions_for, splits_for  # noqa: E402
from fedkd.config import load_config  # noqa: E402


def rules(probs: np.ndarray, counts: np.ndarray) -> dict[str, np.ndarray]:
    """(N, C) teacher scores of each rule from (K, N, C) probabilities and (K, C) counts."""
    share = counts / np.maximum(counts.sum(0, keepdims=True), 1)  # (K, C), columns sum to 1
    logp = np.log(np.clip(probs, 1e-12, 1))
    return {
        "mean of probabilities": probs.mean(0),
        "label-count weighted probabilities": (probs * share[:, None, :]).sum(0),
        "label-count weighted log probabilities": (logp * share[:, None, :]).sum(0),
    }


def main(argv: list[str] | None = None) -> None:
    """Print each rule's accuracy on the proxy and the validation split."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config", type=Path)
    p.add_argument("run", type=Path)
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
    for name, x, y in (("proxy", s.x_proxy, s.y_proxy), ("validation", s.x_val, s.y_val)):
        with torch.no_grad():
            feats = models[0][0](torch.as_tensor(x, dtype=torch.float32))  # shared features
            probs = np.stack([torch.softmax(m[1](feats), 1).numpy() for m in models])
        for rule, scores in rules(probs.astype(np.float64), counts).items():
            print(f"{name:10s}  {rule:40s}  {float((scores.argmax(1) == y).mean()):.4f}")


if __name__ == "__main__":
    main()
