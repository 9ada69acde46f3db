"""Your own CNN on your own data from an ``.npz`` file, run from Python.

The npz is generated from scikit-learn's digits (uint8 images, a train/test split), then
the run goes through ``fedkd.simulations.api.run`` (the same path as ``fedkd simulate``):

    python examples/own_cnn_npz.py                 # in-process, 5 rounds
    python examples/own_cnn_npz.py --rounds 20

The same run from the command line names the model by import path:

    PYTHONPATH=examples fedkd simulate simulations/configs/quickstart.yaml \\
        --set data.source=npz:/tmp/fedkd-digits.npz \\
        --set "clients.models=[usernets:OwnCNN, mlp]" --set distill.student=usernets:OwnCNN
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from fedkd.simulations import api
from sklearn.datasets import load_digits
from usernets import OwnCNN


def write_npz(path: Path) -> Path:
    """sklearn digits as uint8 8x8 images: 1400 train, 397 test."""
    x, y = load_digits(return_X_y=True)
    x = np.round(x.reshape(-1, 8, 8) * (255 / 16)).astype(np.uint8)
    np.savez(path, x_train=x[:1400], y_train=y[:1400], x_test=x[1400:], y_test=y[1400:])
    return path


def main(argv: list[str] | None = None) -> api.RunResult:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--npz", default="/tmp/fedkd-digits.npz")
    parser.add_argument("--out", default=None, help="run directory (default: a temporary one)")
    args = parser.parse_args(argv)

    npz = write_npz(Path(args.npz))
    result = api.run(
        {
            "rounds": args.rounds,
            "data": {"source": f"npz:{npz}", "partition": "dirichlet", "alpha": 0.5},
            "clients": {"num_clients": args.clients, "models": ["own_cnn", "mlp"]},
            "distill": {"student": "own_cnn", "epochs": 10, "proxy_per_round": 150},
            "runtime": {"backend": "inprocess"},
        },
        models={"own_cnn": OwnCNN},  # recorded in the run as its import path usernets:OwnCNN
        out=args.out,
    )
    last = result.rows[-1]
    print(f"student accuracy {last['student_accuracy']:.4f} after {last['round']} rounds")
    print(f"student: {type(result.student).__name__}; run directory {result.out}")
    return result


if __name__ == "__main__":
    main()
