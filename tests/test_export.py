"""``fedkd export``: exported students predict as the torch student does; a card is written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from fedkd.simulations.cli import main
from fedkd.simulations.runner import simulate

from fedkd.clientdata import splits_for
from fedkd.config import from_dict
from fedkd.export import onnx_variant, predict_all
from fedkd.modelcard import export_run
from fedkd.rundir import prepare
from fedkd.student import load_student

TINY = [
    "runtime.backend=inprocess",
    "rounds=2",
    "clients.num_clients=3",
    "clients.local_epochs=2",
    "distill.student=cnn",
    "distill.epochs=3",
    "distill.proxy_per_round=80",
]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run") / "r"
    cfg = from_dict({}, TINY)
    simulate(cfg, run_dir)
    card = export_run(run_dir, run_dir / "export", repeats=1)
    splits = splits_for(cfg.data, cfg.seed)
    return run_dir, card, np.ascontiguousarray(splits.x_test, np.float32), splits.y_test


def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)


def test_fp32_onnx_and_torchscript_predict_as_the_torch_student(exported):
    run_dir, _, x, _ = exported
    student = load_student(run_dir)
    with torch.no_grad():
        ref = student(torch.from_numpy(x)).numpy()
    onnx = predict_all(onnx_variant("onnx", run_dir / "export" / "student.onnx").predict, x)
    ts = torch.jit.load(str(run_dir / "export" / "student.ts.pt"))
    with torch.no_grad():
        script = ts(torch.from_numpy(x)).numpy()

    for got in (onnx, script):
        np.testing.assert_array_equal(got.argmax(1), ref.argmax(1))
        np.testing.assert_allclose(_softmax(got), _softmax(ref), atol=1e-4)


def test_int8_variants_stay_within_one_point_of_the_student(exported):
    _, card, _, _ = exported
    by_name = {v["variant"]: v for v in card["variants"]}
    for name in ("torchscript-int8", "onnx-int8"):
        assert abs(by_name[name]["test_accuracy"] - card["student_accuracy_torch"]) <= 0.01, name
    assert by_name["onnx-fp32"]["test_accuracy"] == card["student_accuracy_torch"]


def test_model_card_records_size_latency_and_run_accuracies(exported):
    run_dir, card, _, _ = exported
    on_disk = json.loads((run_dir / "export" / "model_card.json").read_text())
    assert on_disk == card
    assert card["student_accuracy_run"] == pytest.approx(card["student_accuracy_torch"])
    assert 0.0 <= card["teacher_accuracy_proxy"] <= 1.0
    for v in card["variants"]:
        assert v["bytes"] == (run_dir / "export" / v["file"]).stat().st_size > 0
        assert v["latency_us_batch_1"] > 0 and v["latency_us_batch_256"] > 0
    assert "| onnx-int8 | onnxruntime |" in (run_dir / "export" / "model_card.md").read_text()


def test_export_of_a_run_without_a_finished_student_is_one_line_and_exit_2(tmp_path, capsys):
    prepare(tmp_path / "empty", from_dict({}, TINY), resume=False)  # config only, no round

    code = main(["export", str(tmp_path / "empty")])

    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "has no trained student" in err and len(err.splitlines()) == 1


def test_onnx_example_runs_the_student_with_onnxruntime_alone(exported):
    run_dir, card, _, _ = exported
    script = Path(__file__).resolve().parents[1] / "examples" / "onnx_predict.py"

    done = subprocess.run(
        [sys.executable, str(script), str(run_dir / "export" / "student.onnx")],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )

    assert "accuracy on all 1797 digits" in done.stdout
