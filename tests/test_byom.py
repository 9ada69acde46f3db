"""Bring your own model and data: import paths and ``py:`` sources, checked at preflight."""

from __future__ import annotations

import json

import pytest
from fedkd.simulations.cli import main
from fedkd.simulations.preflight import preflight
from fedkd.simulations.runner import simulate

from fedkd.config import from_dict
from fedkd.models import ModelError, linear, register_model

TINY = [
    "runtime.backend=inprocess",
    "rounds=2",
    "clients.num_clients=3",
    "clients.local_epochs=1",
    "distill.epochs=2",
    "distill.proxy_per_round=60",
]


def _argv(out, sets):
    argv = ["simulate", "--out", str(out)]
    for s in TINY + sets:
        argv += ["--set", s]
    return argv


def _cfg_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("seed: 3\n")
    return str(path)


def test_import_path_models_and_py_source_run_end_to_end(tmp_path):
    out = tmp_path / "run"
    sets = [
        "clients.models=[byom_user:TinyCNN, mlp]",
        "distill.student=byom_user:TinyCNN",
        "data.source=py:byom_user:digits_arrays",
    ]
    argv = _argv(out, sets)
    argv.insert(1, _cfg_file(tmp_path))

    assert main(argv) == 0

    rows = json.loads((out / "metrics.json").read_text())["rounds"]
    assert [r["round"] for r in rows] == [1, 2]
    assert rows[-1]["student_accuracy"] > 0.2  # chance is 0.1
    assert rows[-1]["teacher_accuracy"] > 0.2  # measured on the source's own proxy labels


@pytest.mark.parametrize(
    ("sets", "needle"),
    [
        (["clients.models=[nosuchmodule:Net]"], "clients.models: model 'nosuchmodule:Net': cannot"),
        (["distill.student=byom_user:Missing"], "distill.student: model 'byom_user:Missing'"),
        (["clients.models=[byom_user:NOT_CALLABLE]"], "clients.models: model 'byom_user:NOT_"),
        (["distill.student=byom_user:not_a_module"], "distill.student: model 'byom_user:not_a"),
        (["clients.models=[byom_user:wrong_width]"], "gives output (2, 9) for a batch of 2"),
        (
            [
                "clients.models=[byom_user:with_batchnorm]",
                "privacy.mechanisms=[dpsgd]",
                "privacy.dpsgd.noise_multiplier=1.0",
            ],
            "clients.models: model 'byom_user:with_batchnorm' under privacy.mechanisms=dpsgd",
        ),
        (["data.source=py:nosuchmodule:load"], "py:nosuchmodule:load: cannot import"),
        (["data.source=py:byom_user:TinyCNN"], "py:byom_user:TinyCNN: the loader raised"),
        (["data.source=py:byom_user:labels_out_of_range"], "label 9 >= num_classes=5"),
    ],
)
def test_bad_user_model_or_data_is_one_line_and_exit_2(tmp_path, capsys, sets, needle):
    argv = _argv(tmp_path / "run", sets)
    argv.insert(1, _cfg_file(tmp_path))

    code = main(argv)

    err = capsys.readouterr().err.strip()
    assert code == 2
    assert needle in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_batchnorm_is_fine_without_dp(tmp_path):
    cfg = from_dict({}, TINY + ["clients.models=[byom_user:with_batchnorm]"])
    preflight(cfg)  # no error: BatchNorm is refused only under DP-SGD


def test_registered_lambda_runs_inprocess_but_is_refused_for_ray(tmp_path):
    register_model("lam", lambda shape, classes: linear(shape, classes))
    cfg = from_dict({}, TINY + ["clients.models=[lam]", "distill.student=lam"])
    summary = simulate(cfg, tmp_path / "run")
    assert summary["rounds_completed"] == 2

    ray_cfg = from_dict({}, TINY + ["clients.models=[lam]", "runtime.backend=ray"])
    with pytest.raises(
        ModelError, match="clients.models: model 'lam' is registered in this process only"
    ):
        preflight(ray_cfg)


def test_registered_module_level_model_reaches_ray_only_by_its_import_path():
    import byom_user
    from fedkd.simulations.api import bring_your_own

    register_model("tiny", byom_user.TinyCNN)
    ray_cfg = from_dict({}, TINY + ["clients.models=[tiny]", "runtime.backend=ray"])
    with pytest.raises(ModelError, match="need its import path 'byom_user:TinyCNN'"):
        preflight(ray_cfg)

    portable = bring_your_own(ray_cfg)

    assert portable.clients.models == ("byom_user:TinyCNN",)
    preflight(portable)  # checks only: no Ray is started


def test_registered_data_source_is_refused_for_ray():
    from fedkd.data import DataError, register_source

    spec = register_source("local-digits", lambda: __import__("byom_user").digits_arrays())
    cfg = from_dict({}, TINY + [f"data.source={spec}", "runtime.backend=ray"])

    with pytest.raises(DataError, match="data.source: 'py:local-digits' is registered"):
        preflight(cfg)
