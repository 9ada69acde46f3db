"""The model card of an exported student: size, latency and accuracy of every variant.

Accuracies are measured on the run's test split by each variant's own runtime, next to
the student's accuracy as the run reported it (``metrics.json``) and the teacher's accuracy
on the public proxy set in the last round.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedkd.atomic import write_json, write_text
from fedkd.clientdata import splits_for
from fedkd.export import Variant, export_variants, latency_per_example, predict_all
from fedkd.models import count_parameters
from fedkd.rundir import STUDENT, RunDir
from fedkd.student import load_student

logger = logging.getLogger(__name__)

CARD_JSON, CARD_MD = "model_card.json", "model_card.md"
BATCHES = (1, 256)


def export_run(run_dir: str | Path, out: str | Path | None = None, *, repeats: int = 50) -> dict:
    """Export the student of a finished run and write its model card into ``out``.

    Parameters
    ----------
    run_dir : str or Path
        A finished fedkd run (``DONE`` and ``student.pt``).
    out : str or Path, optional
        Where the files go; ``RUN/export`` by default.
    repeats : int
        Timed runs per latency figure (the median is reported), after one warm-up.

    Returns
    -------
    dict
        The card, as written to ``model_card.json``.
    """
    run = RunDir(Path(run_dir))
    student = load_student(run.path)
    cfg = run.read_config()
    splits = splits_for(cfg.data, cfg.seed)
    x_test = np.ascontiguousarray(splits.x_test, dtype=np.float32)
    out = Path(out) if out is not None else run.path / "export"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # latency on one thread, as onnxruntime's sessions
    try:
        variants = export_variants(student, torch.from_numpy(x_test[:2]), out)
        with torch.no_grad():
            reference = predict_all(lambda x: student(torch.from_numpy(x)).numpy(), x_test)
        rows = _measure(variants, x_test, splits.y_test, reference, repeats)
    finally:
        torch.set_num_threads(threads)
    last = run.read_metrics()[-1]
    card = {
        "run": str(run.path),
        "model": cfg.distill.student,
        "parameters": count_parameters(student),
        "input_shape": list(splits.input_shape),
        "num_classes": int(splits.num_classes),
        "test_examples": len(x_test),
        "student_pt_bytes": (run.path / STUDENT).stat().st_size,
        "student_accuracy_torch": _accuracy(reference, splits.y_test),
        "student_accuracy_run": last["student_accuracy"],
        "teacher_accuracy_proxy": last["teacher_accuracy"],
        "rounds": last["round"],
        "latency": f"median of {repeats} runs, one CPU thread, per example",
        "variants": rows,
    }
    write_json(out / CARD_JSON, card)
    write_text(out / CARD_MD, render_markdown(card))
    logger.info("exported %s to %s", run.path, out)
    return card


def _measure(
    variants: list[Variant],
    x: np.ndarray,
    y: np.ndarray,
    reference: np.ndarray,
    repeats: int,
) -> list[dict[str, Any]]:
    """One card row per variant: file size, accuracy, agreement with torch, latency."""
    rows = []
    for v in variants:
        logits = predict_all(v.predict, x)
        row = {
            "variant": v.name,
            "runtime": v.runtime,
            "file": v.path.name,
            "bytes": v.path.stat().st_size,
            "test_accuracy": _accuracy(logits, y),
            "agrees_with_torch": float(np.mean(logits.argmax(1) == reference.argmax(1))),
        }
        for b in BATCHES:
            row[f"latency_us_batch_{b}"] = 1e6 * latency_per_example(v.predict, x, b, repeats)
        rows.append(row)
    return rows


def _accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(logits.argmax(1) == y))


def render_markdown(card: dict[str, Any]) -> str:
    """The card as a Markdown page (a summary line and one table row per variant)."""
    lines = [
        f"# Model card: student of {card['run']}",
        "",
        f"Model `{card['model']}`, {card['parameters']:,} parameters, input "
        f"{tuple(card['input_shape'])}, {card['num_classes']} classes, after "
        f"{card['rounds']} rounds.",
        f"Student test accuracy in the run {card['student_accuracy_run']:.4f} (torch, "
        f"recomputed: {card['student_accuracy_torch']:.4f}); teacher accuracy on the proxy "
        f"set {card['teacher_accuracy_proxy']:.4f}. Test set: {card['test_examples']} "
        f"examples. Latency: {card['latency']}.",
        "",
        "| variant | runtime | file | size | test accuracy | argmax = torch | "
        "µs/example, batch 1 | µs/example, batch 256 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in card["variants"]:
        lines.append(
            f"| {r['variant']} | {r['runtime']} | `{r['file']}` | {r['bytes']:,} B | "
            f"{r['test_accuracy']:.4f} | {r['agrees_with_torch']:.4f} | "
            f"{r['latency_us_batch_1']:.1f} | {r['latency_us_batch_256']:.2f} |"
        )
    return "\n".join(lines) + "\n"
