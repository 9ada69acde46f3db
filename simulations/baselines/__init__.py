"""Baselines for side-by-side benchmarks, run from the same :class:`~fedkd.config.Config`.

=================  =================================================================
method             what runs
=================  =================================================================
``central``        pooled private partitions, student architecture, non-private
``central-dpsgd``  the same with Opacus DP-SGD (example-level ε)
``local``          each client alone on its partition (mean and worst client accuracy)
``fedavg``         Flower's ``FedAvg`` with the student architecture (weights travel)
``dp-fedavg``      ``FedAvg`` in a fixed-denominator server-side DP wrapper
                   (:mod:`fedkd.simulations.baselines.dpfedavg`) with Flower's ``RdpAccountant``
                   (client-level ε, no amplification)
``fedkd``          the federated-distillation run itself (:func:`fedkd.simulations.runner.simulate`)
=================  =================================================================

Every method writes a run directory with ``config.yaml``, ``metrics.json`` (rows with the
keys of fedkd's) and ``DONE`` (the summary).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedkd.simulations.central_only import refuse_central_only

from fedkd.config import Config, ConfigError
from fedkd.registry import Registry


def _fedkd(cfg: Config, out: str | Path) -> dict[str, Any]:
    from fedkd.simulations.runner import simulate

    return {"method": "fedkd", **simulate(cfg, out)}


def _central(cfg: Config, out: str | Path) -> dict[str, Any]:
    from fedkd.simulations.baselines.central import run_central

    return run_central(cfg, out)


def _central_dpsgd(cfg: Config, out: str | Path) -> dict[str, Any]:
    from fedkd.simulations.baselines.central import run_central_dpsgd

    return run_central_dpsgd(cfg, out)


def _local(cfg: Config, out: str | Path) -> dict[str, Any]:
    from fedkd.simulations.baselines.local import run_local

    return run_local(cfg, out)


def _fedavg(cfg: Config, out: str | Path, private: bool = False) -> dict[str, Any]:
    from fedkd.simulations.baselines.fedavg import run_fedavg

    return run_fedavg(cfg, out, private=private)


#: Method name -> ``(cfg, out) -> summary``; each imports its runner only when it runs.
METHODS: Registry[Callable[[Config, str | Path], dict[str, Any]]] = Registry(
    "method",
    {
        "fedkd": _fedkd,
        "central": _central,
        "central-dpsgd": _central_dpsgd,
        "local": _local,
        "fedavg": _fedavg,
        "dp-fedavg": lambda cfg, out: _fedavg(cfg, out, private=True),
    },
    error=ConfigError,
)


def run_method(method: str, cfg: Config, out: str | Path) -> dict[str, Any]:
    """Run ``method`` on ``cfg`` into the fresh run directory ``out``; return the summary.

    Raises
    ------
    ConfigError
        For an unknown method.
    """
    import torch

    run = METHODS.lookup(method)
    torch.set_num_threads(1)  # one thread per process: with more, 2 loaded cores thrash
    refuse_central_only(cfg, method)
    return run(cfg, out)


__all__ = ["METHODS", "run_method"]
