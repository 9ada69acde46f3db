"""central-dpsgd's neighbouring relation, the central student's GroupNorm, central-only keys."""

from __future__ import annotations

import json

import pytest
import torch
from fedkd.simulations.baselines import run_method
from fedkd.simulations.baselines.central import fit_dpsgd
from fedkd.simulations.baselines.common import (
    GroupStandardize,
    central_student,
    load_data,
    with_group_norm,
)
from fedkd.simulations.central_only import refuse_central_only
from independent_accounting import add_remove_epsilon, replace_one_epsilon

from fedkd.config import ConfigError, from_dict

TINY = {
    "seed": 3,
    "rounds": 2,
    "data": {"source": "digits"},
    "clients": {"num_clients": 3, "models": ["mlp"], "lr": 0.05, "batch_size": 64},
    "distill": {"student": "mlp"},
    "privacy": {"dpsgd": {"target_epsilon": 2.0}},
    "runtime": {"backend": "inprocess"},
}


def _cfg(**sections):
    raw = json.loads(json.dumps(TINY))
    for section, values in sections.items():
        raw[section] = {**raw.get(section, {}), **values}
    return from_dict(raw)


def test_group_standardize_is_groupnorm_without_affine_on_channel_major_features():
    x = torch.randn(5, 81, 7, 7) * 3.0 + torch.arange(81.0).view(1, 81, 1, 1)
    expected = torch.nn.GroupNorm(27, 81, affine=False)(x).reshape(5, -1)
    out = GroupStandardize(27)(x.reshape(5, -1))
    assert torch.allclose(out, expected, atol=1e-5)
    assert list(GroupStandardize(27).parameters()) == []


def test_group_norm_must_divide_the_input_width():
    head = torch.nn.Linear(64, 10)
    assert with_group_norm(head, 0, 64) is head
    with pytest.raises(ConfigError, match="distill.group_norm=5 must divide .* 64"):
        with_group_norm(head, 5, 64)


def test_the_central_student_sees_its_inputs_through_group_norm(tmp_path):
    cfg = _cfg(distill={"student": "mlp", "group_norm": 4})
    model, _ = central_student(cfg, load_data(cfg))
    assert isinstance(model[0], GroupStandardize) and model[0].groups == 4
    summary = run_method("central", cfg, tmp_path / "central")
    assert summary["student_accuracy"] > 0.5


@pytest.mark.parametrize("relation", ["add_remove", "replace_one"])
def test_central_dpsgd_calibrates_and_accounts_under_its_relation(tmp_path, relation):
    cfg = _cfg(privacy={"dpsgd": {"target_epsilon": 2.0, "relation": relation}})
    summary = run_method("central-dpsgd", cfg, tmp_path / relation)
    n = len(load_data(cfg).y_private)
    q, steps = 1 / -(-n // 64), 2 * -(-n // 64)
    independent = {"add_remove": add_remove_epsilon, "replace_one": replace_one_epsilon}
    sigma = summary["noise_multiplier"]
    assert summary["relation"] == relation
    assert summary["accountant"] == f"pld ({relation.replace('_', '-')})"
    assert summary["epsilon_example"] == pytest.approx(
        independent[relation](sigma, q, steps, 1e-5), rel=1e-3
    )
    assert 1.9 < summary["epsilon_example"] <= 2.0 + 1e-9
    other = "replace_one" if relation == "add_remove" else "add_remove"
    assert independent[other](sigma, q, steps, 1e-5) != pytest.approx(2.0, rel=0.1)


def test_fit_dpsgd_without_rows_still_returns_the_epsilon_of_every_step_taken():
    raw = json.loads(json.dumps(TINY))
    raw["rounds"] = 3
    raw["privacy"] = {"dpsgd": {"target_epsilon": 2.0, "relation": "add_remove"}}
    cfg = from_dict(raw)
    model, data = central_student(cfg, load_data(cfg))
    res = fit_dpsgd(cfg, model, data.x_private, data.y_private, data.x_test, data.y_test)
    n = len(data.y_private)
    q, steps = 1 / -(-n // 64), 3 * -(-n // 64)
    assert res.steps == steps
    assert res.epsilon == pytest.approx(
        add_remove_epsilon(res.noise_multiplier, q, steps, 1e-5), rel=1e-3
    )
    assert 1.9 < res.epsilon <= 2.0 + 1e-9


def test_the_relation_is_validated_at_load():
    with pytest.raises(ConfigError, match="privacy.dpsgd.relation must be replace_one or"):
        _cfg(privacy={"dpsgd": {"relation": "swap"}})
    with pytest.raises(ConfigError, match="distill.group_norm must be >= 0"):
        _cfg(distill={"group_norm": -1})


def test_central_only_keys_are_refused_elsewhere(tmp_path):
    add_remove = _cfg(privacy={"dpsgd": {"target_epsilon": 2.0, "relation": "add_remove"}})
    grouped = _cfg(distill={"student": "mlp", "group_norm": 4})
    refuse_central_only(add_remove, "central-dpsgd")
    refuse_central_only(grouped, "central")
    with pytest.raises(ConfigError, match="relation=add_remove applies to central-dpsgd only"):
        run_method("fedkd", add_remove, tmp_path / "fedkd")
    with pytest.raises(ConfigError, match="relation=add_remove"):
        refuse_central_only(add_remove, "dp-fedavg")
    with pytest.raises(ConfigError, match="distill.group_norm applies to the central"):
        run_method("fedavg", grouped, tmp_path / "fedavg")
    assert not (tmp_path / "fedkd").exists() and not (tmp_path / "fedavg").exists()


def test_the_baseline_command_names_epsilon_and_relation(tmp_path, capsys):
    import yaml
    from fedkd.simulations.cli import main

    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "run"
    code = main(
        ["baseline", "central-dpsgd", str(path), "--out", str(out),
         "--set", "privacy.dpsgd.relation=add_remove"]
    )  # fmt: skip
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert code == 0
    assert line.startswith("central-dpsgd: final accuracy ")
    assert "(δ = 1e-05, pld (add-remove))" in line and "ε = 1.9" in line
    refused = ["baseline", "fedavg", str(path), "--out", str(tmp_path / "f"), "--set"]
    assert main([*refused, "distill.group_norm=4"]) == 2
    assert not (tmp_path / "f").exists()
