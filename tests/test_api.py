"""The Python API runs the same code path as ``fedkd simulate``."""

from __future__ import annotations

import json

import byom_user
import numpy as np
import torch
from fedkd.simulations import api
from fedkd.simulations.cli import main
from torch import nn

TINY = {
    "seed": 5,
    "rounds": 2,
    "clients": {"num_clients": 3, "local_epochs": 1, "models": ["mine", "mlp"]},
    "distill": {"student": "mine", "epochs": 2, "proxy_per_round": 60},
    "runtime": {"backend": "inprocess"},
}
TIMINGS = {"seconds"}


def _without_timings(rows):
    return [{k: v for k, v in r.items() if k not in TIMINGS} for r in rows]


def test_api_run_equals_cli_run_with_the_same_config_and_seed(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(json.dumps(TINY))  # JSON is YAML
    sets = ["clients.models=[byom_user:TinyCNN, mlp]", "distill.student=byom_user:TinyCNN"]
    assert (
        main(
            ["simulate", str(path), "--out", str(tmp_path / "cli")]
            + sum([["--set", s] for s in sets], [])
        )
        == 0
    )

    result = api.run(path, out=tmp_path / "api", models={"mine": byom_user.TinyCNN})

    cli_rows = json.loads((tmp_path / "cli" / "metrics.json").read_text())["rounds"]
    assert _without_timings(result.rows) == _without_timings(cli_rows)
    assert result.config.clients.models == ("byom_user:TinyCNN", "mlp")  # recorded by import path


def test_api_takes_models_and_data_in_code_and_returns_the_trained_student(tmp_path):
    arrays = byom_user.digits_arrays()

    def closure_model(input_shape, num_classes):  # a closure: in-process only
        return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(input_shape)), num_classes))

    result = api.run(TINY, models={"mine": closure_model}, data=arrays, out=tmp_path / "r")

    assert [r["round"] for r in result.rows] == [1, 2]
    x = torch.as_tensor(arrays["x_test"][:5] / np.float32(255.0), dtype=torch.float32)
    assert result.student(x).shape == (5, 10)
    assert result.config.data.source == "py:api-data"
    assert (result.out / "student.pt").is_file()
