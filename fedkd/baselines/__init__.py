"""Baselines for side-by-side benchmarks, run from the same :class:`~fedkd.config.Config`.

=================  =================================================================
method             what runs
=================  =================================================================
``central``        pooled private partitions, student architecture, non-private
``central-dpsgd``  the same with Opacus DP-SGD (example-level ε)
``local``          each client alone on its partition (mean and worst client accuracy)
``fedavg``         Flower's ``FedAvg`` with the student architecture (weights travel)
``dp-fedavg``      ``FedAvg`` in a fixed-denominator server-side DP wrapper
                   (:mod:`fedkd.baselines.dpfedavg`) with Flower's ``RdpAccountant``
                   (client-level ε, no amplification)
``fedkd``          the federated-distillation run itself (:func:`simulations.runner.simulate`)
=================  =================================================================

Every method writes a run directory with ``config.yaml``, ``metrics.json`` (rows with the
keys of fedkd's) and ``DONE`` (the summary).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedkd.config import Config, ConfigError, refuse_central_only

METHODS: tuple[str, ...] = ("fedkd", "central", "central-dpsgd", "local", "fedavg", "dp-fedavg")


def run_method(method: str, cfg: Config, out: str | Path) -> dict[str, Any]:
    """Run ``method`` on ``cfg`` into the fresh run directory ``out``; return the summary.

    Raises
    ------
    ConfigError
        For an unknown method.
    """
    import torch

    torch.set_num_threads(1)  # one thread per process: with more, 2 loaded cores thrash
    refuse_central_only(cfg, method)
    if method == "fedkd":
        from simulations.runner import simulate

        summary = simulate(cfg, out)
        return {"method": "fedkd", **summary}
    if method == "central":
        from fedkd.baselines.central import run_central

        return run_central(cfg, out)
    if method == "central-dpsgd":
        from fedkd.baselines.central import run_central_dpsgd

        return run_central_dpsgd(cfg, out)
    if method == "local":
        from fedkd.baselines.local import run_local

        return run_local(cfg, out)
    if method in ("fedavg", "dp-fedavg"):
        from fedkd.baselines.fedavg import run_fedavg

        return run_fedavg(cfg, out, private=method == "dp-fedavg")
    raise ConfigError(f"unknown method '{method}' (choose from {', '.join(METHODS)})")


__all__ = ["METHODS", "run_method"]
