"""Local-only baseline: every client trains alone on its own partition, nothing is shared.

Client ``i`` trains ``clients.models[i % len(models)]`` (the architecture it would have in
fedkd, on the fixed public features of ``clients.feature_map`` / ``clients.public_features``
if set) for ``clients.local_epochs`` epochs per round. Every client is evaluated on the
server's test set; a row reports the mean (``student_accuracy``) and the worst client
(``worst_client_accuracy``), and, with a validation split, the mean validation accuracy
(``student_val_accuracy``). Evaluating all clients is the slow part, so rows are written
every ``max(1, rounds // 5)`` rounds and at the last round, or only at the last round when
``num_clients × test examples`` reaches one million.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from fedkd.simulations.baselines.common import generator, load_data, model_on_features, open_run

from fedkd.config import Config
from fedkd.distill import evaluate, make_optimizer, train_supervised
from fedkd.validation import mean_val_metrics

logger = logging.getLogger(__name__)


def run_local(cfg: Config, out: str | Path) -> dict[str, Any]:
    """Train each client alone; report mean and worst client test accuracy.

    Parameters
    ----------
    cfg : Config
        Uses ``data``, ``seed``, ``rounds``, ``clients.{num_clients, models, local_epochs,
        lr, batch_size}``.
    out : str or Path
        A fresh run directory.

    Returns
    -------
    dict
        The summary, with ``worst_client_accuracy`` and ``client_accuracies``.
    """
    data = load_data(cfg)
    rec = open_run(cfg, out, "local")
    c = cfg.clients
    models, opts, inputs, val_inputs = [], [], [], []
    x_test = data.x_test
    for i in range(c.num_clients):
        # The client's architecture on its fixed public features, if any (as in fedkd).
        model, (x_own, x_test, x_val) = model_on_features(
            cfg,
            c.models[i % len(c.models)],
            "clients",
            data.input_shape,
            data.num_classes,
            cfg.seed + i,
            data.x_private[_offsets(data.parts, i)],
            data.x_test,
            data.x_val,
        )
        models.append(model)
        val_inputs.append(x_val)
        opts.append(make_optimizer(model, c.lr))
        inputs.append(x_own)
    gens = [generator(cfg.seed, 13, i) for i in range(c.num_clients)]
    # Evaluating every client is the slow part: only at the end for large settings.
    large = c.num_clients * len(data.y_test) >= 1_000_000
    every = cfg.rounds if large else max(1, cfg.rounds // 5)
    accs: list[float] = []
    for rnd in range(1, cfg.rounds + 1):
        for i, idx in enumerate(data.parts):
            if len(idx) == 0:
                continue
            train_supervised(
                models[i],
                opts[i],
                inputs[i],
                data.y_private[_offsets(data.parts, i)],
                epochs=c.local_epochs,
                batch_size=c.batch_size,
                generator=gens[i],
            )
        if rnd % every and rnd != cfg.rounds:
            continue
        results = [evaluate(m, x_test, data.y_test) for m in models]
        accs = [acc for _, acc in results]
        rec.add(
            {
                "round": rnd,
                "student_accuracy": float(np.mean(accs)),
                "student_loss": float(np.mean([loss for loss, _ in results])),
                "worst_client_accuracy": float(np.min(accs)),
                "best_client_accuracy": float(np.max(accs)),
                **mean_val_metrics([partial(evaluate, m) for m in models], val_inputs, data.y_val),
            }
        )
    return rec.finish(
        {
            "worst_client_accuracy": float(np.min(accs)),
            "client_accuracies": [round(a, 4) for a in accs],
        }
    )


def _offsets(parts: tuple[np.ndarray, ...], i: int) -> slice:
    """Rows of client ``i`` in the pooled arrays of :func:`load_data` (parts concatenated)."""
    start = int(sum(len(p) for p in parts[:i]))
    return slice(start, start + len(parts[i]))
