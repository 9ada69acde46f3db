"""Config loading, overrides and validation errors."""

from __future__ import annotations

import pytest

from fedkd.config import ConfigError, from_dict, load_config, parse_overrides, to_dict


def test_defaults_round_trip_through_dict():
    cfg = from_dict({})
    again = from_dict(to_dict(cfg))
    assert again == cfg
    assert cfg.data.source == "digits"


def test_overrides_reach_nested_keys_with_yaml_types():
    cfg = from_dict({}, ["distill.codec=int8", "rounds=3", "clients.models=[mlp, cnn]"])
    assert cfg.distill.codec == "int8"
    assert cfg.rounds == 3
    assert cfg.clients.models == ("mlp", "cnn")


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match="unknown config key 'distill.tempreature'"):
        from_dict({"distill": {"tempreature": 2.0}})


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match="'rounds' must be an integer"):
        from_dict({"rounds": "ten"})


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("data.alpha=0", "data.alpha"),
        ("data.alpha=-1", "data.alpha"),
        ("rounds=0", "rounds"),
        ("clients.sampling=sometimes", "clients.sampling"),
        ("privacy.mechanisms=[magic]", "privacy.mechanisms"),
        ("privacy.delta=1.5", "privacy.delta"),
        ("distill.temperature=0", "distill.temperature"),
        ("clients.public_features=-1", "clients.public_features"),
        ("distill.propagate_neighbors=-2", "distill.propagate_neighbors"),
        ("distill.propagate_alpha=1", "distill.propagate_alpha"),
        ("distill.sharpen=0", "distill.sharpen"),
        ("clients.feature_map=wavelets", "clients.feature_map"),
        ("distill.feature_map=pca", "distill.feature_map"),
        ("distill.public_features=-3", "distill.public_features"),
        ("distill.digest_target=ensemble", "distill.digest_target"),
        ("distill.max_entropy=0", "distill.max_entropy"),
        ("distill.max_entropy=1.5", "distill.max_entropy"),
        ("distill.mixup=-0.1", "distill.mixup"),
        ("distill.teacher_ema=1", "distill.teacher_ema"),
        ("distill.teacher_ema=-0.1", "distill.teacher_ema"),
        ("distill.lr_schedule=step", "distill.lr_schedule"),
        ("distill.early_stop=-1", "distill.early_stop"),
        ("distill.holdout_fraction=0", "distill.holdout_fraction"),
        ("distill.holdout_fraction=1", "distill.holdout_fraction"),
        ("distill.proxy_per_round=-1", "distill.proxy_per_round"),
        ("distill.proxy_per_round=1.5", "distill.proxy_per_round"),
        ("distill.proxy_per_round=0.0", "distill.proxy_per_round"),
        ("clients.joint_distill=-0.5", "clients.joint_distill"),
    ],
)
def test_impossible_values_are_refused_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        from_dict({}, [override])


def test_dpsgd_needs_exactly_one_of_noise_and_target():
    with pytest.raises(ConfigError, match="exactly one of noise_multiplier and target_epsilon"):
        from_dict({"privacy": {"mechanisms": ["dpsgd"]}})


@pytest.mark.parametrize("accountant", ["gdp", "rdp", "prv"])
def test_only_the_pld_accountant_is_accepted_for_dpsgd(accountant):
    # Replace-one with Poisson sampling is accounted by PLD only; GDP is never allowed.
    sets = ["privacy.mechanisms=[dpsgd]", "privacy.dpsgd.noise_multiplier=1.0"]
    with pytest.raises(ConfigError, match=rf"accountant must be pld.*got '{accountant}'"):
        from_dict({}, [*sets, f"privacy.dpsgd.accountant={accountant}"])
    assert from_dict({}, sets).privacy.dpsgd.accountant == "pld"


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("rounds: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_set_without_equals_is_refused():
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["rounds"])


def test_exponent_without_dot_is_a_number():
    # PyYAML follows YAML 1.1, where "1e-5" is a string; a float key accepts it anyway.
    assert from_dict({"privacy": {"delta": "1e-5"}}).privacy.delta == 1e-5
    assert from_dict({}, ["privacy.delta=1e-3"]).privacy.delta == 1e-3
    with pytest.raises(ConfigError, match="privacy.delta"):
        from_dict({"privacy": {"delta": "tiny"}})


@pytest.mark.parametrize(
    ("override", "key", "allowed"),
    [
        ("distill.codec=int9", "distill.codec", "fp32, fp16, int8, onebit, vote, topk"),
        ("distill.aggregation=foo", "distill.aggregation", "mean_probs, mean_logits"),
        ("data.partition=zipf", "data.partition", "iid, dirichlet, pathological, shards"),
        ("clients.feature_map=wavelets", "clients.feature_map", "pixels, scattering"),
        ("distill.feature_map=wavelets", "distill.feature_map", "pixels, scattering"),
        ("faults.attack=nasty", "faults.attack", "random, flip, constant, scale"),
        ("clients.models=[mlp, resnet]", "clients.models", "linear, mlp, mlp_wide, cnn"),
        ("distill.student=resnet", "distill.student", "linear, mlp, mlp_wide, cnn"),
        ("privacy.mechanisms=[dp]", "privacy.mechanisms", "dpsgd, gaussian, pate"),
        ("clients.sampling=sometimes", "clients.sampling", "all, poisson, fixed"),
        ("runtime.backend=threads", "runtime.backend", "ray, inprocess"),
    ],
)
def test_every_name_valued_key_is_checked_against_its_registry(override, key, allowed):
    with pytest.raises(ConfigError) as err:
        from_dict({}, [override])
    message = str(err.value)
    assert message.startswith(f"{key}: unknown ") and allowed in message
    assert len(message.splitlines()) == 1


def test_registries_and_config_check_agree():
    """Every name a registry accepts passes the config check (no stale hard-coded list)."""
    from fedkd.aggregate import AGGREGATORS
    from fedkd.attacks import ATTACKS
    from fedkd.compress import CODECS
    from fedkd.data.partition import SCHEMES
    from fedkd.features import FEATURE_MAPS
    from fedkd.models import MODELS

    for name in CODECS:
        from_dict({}, [f"distill.codec={name}"])
    for name in AGGREGATORS:
        from_dict({}, [f"distill.aggregation={name}"])
    for name in SCHEMES:
        from_dict({}, [f"data.partition={name}"])
    for name in FEATURE_MAPS:
        from_dict({}, [f"clients.feature_map={name}"])
    for name in ATTACKS:
        from_dict({}, [f"faults.attack={name}"])
    for name in MODELS:
        from_dict({}, [f"clients.models=[{name}]", f"distill.student={name}"])
    from_dict({}, ["clients.models=[pkg.mod:factory]"])  # import paths: checked at preflight


def test_aggregation_params_the_rule_does_not_take_are_refused():
    with pytest.raises(ConfigError, match="rule 'power' takes beta, got gamma"):
        from_dict({}, ["distill.aggregation=power", "distill.aggregation_params={gamma: 2}"])
    with pytest.raises(ConfigError, match="rule 'median' takes no parameters, got trim"):
        from_dict({}, ["distill.aggregation=median", "distill.aggregation_params={trim: 0.1}"])


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_an_empty_config_file_is_refused(tmp_path, text):
    path = tmp_path / "empty.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"config file {path} is empty"):
        load_config(path)


def test_proxy_per_round_keeps_a_count_an_integer_and_a_share_a_float():
    assert from_dict({}, ["distill.proxy_per_round=150"]).distill.proxy_per_round == 150
    assert isinstance(from_dict({}, ["distill.proxy_per_round=150"]).distill.proxy_per_round, int)
    assert from_dict({}, ["distill.proxy_per_round=0.35"]).distill.proxy_per_round == 0.35


@pytest.mark.parametrize("norm", [1e-30, float("inf"), 0.0])
def test_a_dpsgd_clip_norm_too_small_or_not_finite_is_refused(norm):
    # Below ~1e-19 Opacus' float32 clip factor goes subnormal and one example can count ~2 C.
    with pytest.raises(ConfigError, match="privacy.dpsgd.max_grad_norm must be finite and >="):
        from_dict(
            {
                "privacy": {
                    "mechanisms": ["dpsgd"],
                    "dpsgd": {"noise_multiplier": 1.0, "max_grad_norm": norm},
                }
            }
        )


def test_joint_distillation_is_refused_beside_dp_sgd_naming_both_keys():
    sets = ["privacy.mechanisms=[dpsgd]", "privacy.dpsgd.noise_multiplier=1.0"]
    with pytest.raises(ConfigError, match=r"clients\.joint_distill .*privacy\.mechanisms dpsgd"):
        from_dict({}, [*sets, "clients.joint_distill=1.0"])
    assert from_dict({}, [*sets, "clients.joint_distill=0"]).clients.joint_distill == 0.0
    assert from_dict({}, ["clients.joint_distill=1.0"]).clients.joint_distill == 1.0


def test_a_cosine_schedule_is_refused_beside_early_stopping_naming_both_keys():
    with pytest.raises(ConfigError, match=r"distill\.lr_schedule=cosine .*distill\.early_stop"):
        from_dict({}, ["distill.lr_schedule=cosine", "distill.early_stop=2"])
    assert from_dict({}, ["distill.lr_schedule=cosine"]).distill.lr_schedule == "cosine"
