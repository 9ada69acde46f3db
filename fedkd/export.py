"""Export a run's trained student: TorchScript and ONNX, fp32 and dynamically quantized int8.

Each variant is written to a file, loaded back by its own runtime (TorchScript by torch,
ONNX by onnxruntime) and measured there: test accuracy and CPU latency on one thread. The
ONNX variants need the ``export`` extra (``pip install "fedkd[export]"``: onnx, onnxscript,
onnxruntime).
"""

from __future__ import annotations

import logging
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)

#: A loaded variant: float32 inputs (B, ...) -> logits (B, C).
Predict = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Variant:
    """One exported file and the runtime that runs it."""

    name: str  # e.g. "onnx-int8"
    runtime: str  # "torch" or "onnxruntime"
    path: Path
    predict: Predict


def to_torchscript(model: nn.Module, example: torch.Tensor, path: Path, *, int8: bool) -> Variant:
    """Trace ``model`` (optionally with int8 dynamic quantization of its Linear layers).

    ``torch.ao.quantization.quantize_dynamic`` quantizes ``nn.Linear`` weights to int8;
    convolutions stay fp32 (dynamic quantization has no convolution kernel).
    """
    if int8:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", (DeprecationWarning, UserWarning))
            model = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    with torch.no_grad():
        traced = torch.jit.trace(model, example, check_trace=False)
    torch.jit.save(traced, str(path))
    loaded = torch.jit.load(str(path))

    @torch.no_grad()
    def predict(x: np.ndarray) -> np.ndarray:
        return loaded(torch.from_numpy(x)).numpy()

    return Variant(f"torchscript-{'int8' if int8 else 'fp32'}", "torch", path, predict)


def to_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> Path:
    """Export ``model`` to ONNX (torch's ``torch.export``-based exporter), batch dynamic.

    The graph has one input ``x`` (float32, ``(batch, *input_shape)``) and one output
    ``logits`` (``(batch, classes)``).
    """
    batch = torch.export.Dim("batch", min=1)
    onnx_log = logging.getLogger("torch.onnx")  # warns that torchvision ops are skipped
    level = onnx_log.level
    onnx_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning, UserWarning))
            torch.onnx.export(
                model,
                (example,),
                str(path),
                input_names=["x"],
                output_names=["logits"],
                dynamic_shapes=({0: batch},),
                dynamo=True,
                verbose=False,
            )
    finally:
        onnx_log.setLevel(level)
    return path


def quantize_onnx(src: Path, dst: Path) -> Path:
    """int8 dynamic quantization of an ONNX file (``onnxruntime.quantization``)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # onnxruntime logs a pre-processing hint on the root logger
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    return dst


def onnx_variant(name: str, path: Path) -> Variant:
    """An ONNX file run by onnxruntime on one CPU thread."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def predict(x: np.ndarray) -> np.ndarray:
        return session.run(None, {"x": x})[0]

    return Variant(name, "onnxruntime", path, predict)


def predict_all(predict: Predict, x: np.ndarray, batch: int = 256) -> np.ndarray:
    """Logits of every row of ``x``, in batches."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    return np.concatenate([predict(x[i : i + batch]) for i in range(0, len(x), batch)])


def latency_per_example(predict: Predict, x: np.ndarray, batch: int, repeats: int) -> float:
    """Median seconds per example of ``predict`` on batches of ``batch`` rows (one warm-up).

    Rows of ``x`` are repeated if it has fewer than ``batch``.
    """
    reps = -(-batch // len(x))
    xb = np.ascontiguousarray(np.concatenate([x] * reps)[:batch], dtype=np.float32)
    predict(xb)  # warm-up: lazy initialisation, allocator
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        predict(xb)
        times.append(time.perf_counter() - start)
    return statistics.median(times) / batch


def export_variants(model: nn.Module, example: torch.Tensor, out: Path) -> list[Variant]:
    """Write the four variants into ``out`` and load each in its runtime.

    Raises
    ------
    ModuleNotFoundError
        If onnx, onnxscript or onnxruntime is missing (the ``export`` extra).
    """
    out.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    variants = [
        to_torchscript(model, example, out / "student.ts.pt", int8=False),
        to_torchscript(model, example, out / "student.int8.ts.pt", int8=True),
    ]
    fp32 = to_onnx(model, example, out / "student.onnx")
    int8 = quantize_onnx(fp32, out / "student.int8.onnx")
    variants += [onnx_variant("onnx-fp32", fp32), onnx_variant("onnx-int8", int8)]
    return variants
