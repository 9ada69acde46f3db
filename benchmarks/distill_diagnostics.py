"""Where the accuracy goes: fedkd's teacher and student next to FedAvg, round by round.

For one config (default: the quickstart on digits) and each seed, runs fedkd and the
``fedavg`` baseline (:func:`fedkd.simulations.baselines.run_method`: Flower's FedAvg with the
student's architecture, the same rounds, clients, partition and local training) on the
in-process grid and prints, per round:

* ``teacher``: the aggregated teacher's accuracy on the round's proxy rows (true labels,
  used for this measurement only);
* ``student``: fedkd's student on the test split, and ``gap`` = teacher - student (two
  different sets of rows: read it as "how much of the teacher reaches the student");
* ``fedavg``: FedAvg's global model on the test split;
* uplink bytes per client-round of both.

After the last round, from the run directories: the student's accuracy on the whole proxy
(the same rows as the teacher), and the ensemble of the clients' final local models (mean
of their probabilities) on the proxy and on the test split: the ceiling a perfect
distillation of those models would reach.

Nothing here is chosen by the figures: every setting comes from the config as given, and
the test split is only printed.

    .venv/bin/python benchmarks/distill_diagnostics.py [--config YAML] [--source SPEC]
        [--seeds 0 1 2] [--set KEY=VALUE ...] [--out DIR] [--methods fedkd [fedavg]]

With ``--set data.validation_fraction=0.15`` every run also records its accuracy on a
validation split held out of the private pool, printed as ``(val)``: what settings are
chosen on. ``benchmarks/distill_table.py`` turns several ``diagnostics.json`` files into
the issue-15 table.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fedkd.simulations.baselines import run_method
from fedkd.simulations.preflight import preflight
from torch import nn

from fedkd.clientdata import splits_for
from fedkd.clientstate import StateDir
from fedkd.config import Config, load_config
from fedkd.distill import predict_probs
from fedkd.features import build_client_model, feature_args
from fedkd.local import client_model_name
from fedkd.rundir import RunDir
from fedkd.student import load_student

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "simulations" / "configs" / "quickstart.yaml"
METHODS = ("fedkd", "fedavg")
VAL = "student_val_accuracy"  # fedkd.validation.ROW_KEY


def per_client(row: dict[str, Any]) -> float:
    """Mean uplink bytes of one client in this round."""
    ups = list(row.get("bytes_up_per_client", {}).values())
    return sum(ups) / len(ups) if ups else float("nan")


def local_models(cfg: Config, run: Path) -> list[nn.Module]:
    """The clients' last saved local models (a client never sampled has none)."""
    splits = splits_for(cfg.data, cfg.seed)
    models = []
    for cid in range(cfg.clients.num_clients):
        state = StateDir(run / "clients" / f"client-{cid}").load_before(cfg.rounds + 1)
        if state is None:
            continue
        model = build_client_model(
            client_model_name(cfg, cid),
            tuple(splits.input_shape),
            int(splits.num_classes),
            seed=0,
            x_public=splits.x_proxy,
            **feature_args(cfg.clients, "clients"),
        )
        model.load_state_dict(state.model)
        models.append(model.eval())
    return models


def accuracy(probs: np.ndarray, y: np.ndarray) -> float:
    """Share of rows whose most probable class is the label."""
    return float((probs.argmax(1) == y).mean())


def final_extras(cfg: Config, run: Path) -> dict[str, float]:
    """Student on the whole proxy; local-model ensemble (mean probabilities) on proxy, test."""
    s = splits_for(cfg.data, cfg.seed)
    models = local_models(cfg, run)

    def ensemble(x: np.ndarray) -> np.ndarray:
        return np.mean([predict_probs(m, x) for m in models], axis=0)

    return {
        "student_proxy": accuracy(predict_probs(load_student(run), s.x_proxy), s.y_proxy),
        "ensemble_proxy": accuracy(ensemble(s.x_proxy), s.y_proxy),
        "ensemble_test": accuracy(ensemble(s.x_test), s.y_test),
        "local_models": len(models),
    }


def run_seed(cfg: Config, out: Path, methods: tuple[str, ...] = METHODS) -> dict[str, Any]:
    """fedkd (and FedAvg) on one config; their metric rows, extras and wall times."""
    preflight(cfg)
    result: dict[str, Any] = {"seed": cfg.seed}
    for method in methods:
        t0 = time.perf_counter()
        run_method(method, cfg, out / method)
        result[f"{method}_seconds"] = round(time.perf_counter() - t0, 1)
        result[method] = RunDir(out / method).read_metrics()
    result.update(final_extras(cfg, out / "fedkd"))
    return result


def print_rounds(res: dict[str, Any]) -> None:
    """The per-round table of one seed."""
    print(
        f"\nseed {res['seed']}  (fedkd {res['fedkd_seconds']} s, "
        f"fedavg {res.get('fedavg_seconds', '-')} s)"
    )
    print(
        f"{'round':>5} {'teacher':>8} {'student':>8} {'gap':>7} {'fedavg':>7} "
        f"{'fedkd B/cr':>10} {'fedavg B/cr':>11}"
    )
    fedavg = {r["round"]: r for r in res.get("fedavg", [])}
    for r in res["fedkd"]:
        a = fedavg.get(r["round"], {})
        fa_acc = a.get("student_accuracy", float("nan"))
        print(
            f"{r['round']:>5} {r['teacher_accuracy']:>8.4f} {r['student_accuracy']:>8.4f} "
            f"{r['teacher_accuracy'] - r['student_accuracy']:>+7.4f} {fa_acc:>7.4f} "
            f"{per_client(r):>10.0f} {per_client(a) if a else float('nan'):>11.0f}"
        )
    print(
        f"final: student on proxy {res['student_proxy']:.4f}, local-model ensemble on proxy "
        f"{res['ensemble_proxy']:.4f}, on test {res['ensemble_test']:.4f}"
    )


def summarise(results: list[dict[str, Any]]) -> dict[str, tuple[float, float]]:
    """Mean and (sample) standard deviation over seeds of the final-round figures."""
    keys = {
        "teacher (proxy)": lambda r: r["fedkd"][-1]["teacher_accuracy"],
        "student (test)": lambda r: r["fedkd"][-1]["student_accuracy"],
        "student (val)": lambda r: r["fedkd"][-1].get(VAL, float("nan")),
        "student (proxy)": lambda r: r["student_proxy"],
        "local ensemble (proxy)": lambda r: r["ensemble_proxy"],
        "local ensemble (test)": lambda r: r["ensemble_test"],
        "fedavg (test)": lambda r: r["fedavg"][-1]["student_accuracy"],
        "fedavg (val)": lambda r: r["fedavg"][-1].get(VAL, float("nan")),
        "fedkd uplink B/client-round": lambda r: np.mean([per_client(x) for x in r["fedkd"]]),
        "fedavg uplink B/client-round": lambda r: np.mean([per_client(x) for x in r["fedavg"]]),
    }
    if "fedavg" not in results[0]:
        keys = {k: v for k, v in keys.items() if "fedavg" not in k}
    if VAL not in results[0]["fedkd"][-1]:
        keys = {k: v for k, v in keys.items() if "(val)" not in k}
    out = {}
    for name, get in keys.items():
        values = [float(get(r)) for r in results]
        out[name] = (statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0)
    return out


def quiet_flower() -> None:
    """Flower's per-round INFO lines off; fedkd's warnings still print."""
    import flwr.common.logger  # noqa: F401 - Flower configures its logger on import

    logging.getLogger("flwr").setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(CONFIG))
    parser.add_argument("--source", default=None, help="data.source override")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", default=None, help="folder for the run directories")
    parser.add_argument(
        "--methods", nargs="+", default=list(METHODS), choices=METHODS, help="fedkd always runs"
    )
    args = parser.parse_args(argv)
    methods = ("fedkd", *(m for m in args.methods if m != "fedkd"))
    torch.set_num_threads(1)
    quiet_flower()
    out = Path(args.out or tempfile.mkdtemp(prefix="fedkd-diag-"))
    sets = [*args.set, "runtime.backend=inprocess"]
    if args.source:
        sets.append(f"data.source={args.source}")
    t0 = time.perf_counter()
    results = []
    for seed in args.seeds:
        cfg = load_config(args.config, [*sets, f"seed={seed}"])
        results.append(run_seed(cfg, out / f"seed-{seed}", methods))
        print_rounds(results[-1])
    wall = time.perf_counter() - t0
    summary = summarise(results)
    print(f"\n{cfg.data.source}: final round, {len(results)} seed(s), wall {wall:.0f} s")
    for name, (mean, sd) in summary.items():
        print(f"  {name:30} {mean:10.4f} ± {sd:.4f}" if mean < 2 else f"  {name:30} {mean:10.0f}")
    (out / "diagnostics.json").write_text(
        json.dumps(
            {
                "results": results,
                "summary": summary,
                "wall_s": wall,
                "argv": sys.argv[1:] if argv is None else list(argv),
                "source": cfg.data.source,
                "models": list(cfg.clients.models),
                "student": cfg.distill.student,
            },
            default=float,
        )
    )
    print(f"run directories and diagnostics.json in {out}")


if __name__ == "__main__":
    main()
