"""A 1-D signal model (Conv1d) on a generated 1-D data set, through a ``py:`` data source.

The data comes from ``usernets.signals`` (sines of 2-5 cycles plus noise; the procedure is
in its docstring; nothing is stored), named by import path as the run's data source:

    python examples/signal_1d.py
    PYTHONPATH=examples fedkd simulate simulations/configs/quickstart.yaml \\
        --set data.source=py:usernets:signals --set "clients.models=[usernets:SignalNet]" \\
        --set distill.student=usernets:SignalNet --set distill.augment=false
"""

from __future__ import annotations

import argparse

from fedkd.simulations import api


def main(argv: list[str] | None = None) -> api.RunResult:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--out", default=None, help="run directory (default: a temporary one)")
    args = parser.parse_args(argv)

    result = api.run(
        {
            "rounds": args.rounds,
            "data": {"source": "py:usernets:signals", "partition": "dirichlet", "alpha": 1.0},
            "clients": {
                "num_clients": args.clients,
                "models": ["usernets:SignalNet", "linear"],
                "local_epochs": 3,
                "lr": 0.05,
            },
            "distill": {"student": "usernets:SignalNet", "epochs": 10, "proxy_per_round": 200},
            "runtime": {"backend": "inprocess"},
        },
        out=args.out,
    )
    for row in result.rows:
        print(f"round {row['round']}: student {row['student_accuracy']:.4f}")
    return result


if __name__ == "__main__":
    main()
