"""Registries: one table per kind of name, read by the run and by the config check alike."""

from __future__ import annotations

import numpy as np
import pytest
from fedkd.simulations.baselines import METHODS, run_method
from fedkd.simulations.baselines.calibrate import CALIBRATIONS, FEDKD_MECHANISMS, apply_epsilon
from fedkd.simulations.cli import main

from fedkd.aggregate import AGGREGATORS
from fedkd.attacks import ATTACKS, attack
from fedkd.compress import CODECS, get_codec
from fedkd.config import ConfigError, from_dict
from fedkd.data.partition import SCHEMES
from fedkd.features import FEATURE_MAPS
from fedkd.privacy.accounting import ACCOUNTANTS, epsilon
from fedkd.registry import Registry

QUICKSTART = "simulations/configs/quickstart.yaml"


def test_a_registry_lists_its_names_in_order_and_refuses_others_in_one_line() -> None:
    reg: Registry[int] = Registry("colour", {"red": 1, "green": 2})

    @reg.register("blue")
    def _blue() -> int:  # registered by decorator, returned unchanged
        return 3

    assert reg.names() == ("red", "green", "blue") and list(reg) == list(reg.names())
    assert reg.lookup("green") == 2 and reg["blue"] is _blue and "red" in reg
    for bad in ("pink", 7, None):
        with pytest.raises(ValueError) as err:
            reg.lookup(bad)
        assert str(err.value) == f"unknown colour {bad!r} (choose from red, green, blue)"
    with pytest.raises(ConfigError, match="unknown colour 'pink'"):
        Registry("colour", {"red": 1}, error=ConfigError).lookup("pink")


def _names(registry) -> str:
    return ", ".join(registry)


@pytest.mark.parametrize(
    ("call", "registry"),
    [
        (lambda: get_codec("int9"), CODECS),
        (lambda: epsilon([], 1e-5, accountant="moments"), ACCOUNTANTS),
        (lambda: attack(np.full((2, 3), 1 / 3), "nasty", np.random.default_rng(0)), ATTACKS),
        (lambda: run_method("fedprox", from_dict({}), "unused"), METHODS),
        (lambda: apply_epsilon("fedprox", {}, 1.0), CALIBRATIONS),
    ],
    ids=["codec", "accountant", "attack", "method", "calibration"],
)
def test_an_unknown_name_is_one_line_listing_the_registry(call, registry) -> None:
    with pytest.raises(ValueError) as err:  # ConfigError is a ValueError
        call()
    message = str(err.value)
    assert f"unknown {registry.what} " in message and _names(registry) in message
    assert len(message.splitlines()) == 1


@pytest.mark.parametrize(
    ("key", "registry"),
    [
        ("distill.codec", CODECS),
        ("distill.aggregation", AGGREGATORS),
        ("data.partition", SCHEMES),
        ("clients.feature_map", FEATURE_MAPS),
        ("distill.feature_map", FEATURE_MAPS),
        ("faults.attack", ATTACKS),
    ],
)
def test_a_bad_name_in_a_config_key_lists_that_keys_registry(key, registry) -> None:
    with pytest.raises(ConfigError) as err:
        from_dict({}, [f"{key}=no-such-name"])
    message = str(err.value)
    assert message.startswith(f"{key}: unknown ") and _names(registry) in message
    assert len(message.splitlines()) == 1


@pytest.mark.parametrize("key", ["distill.codec", "faults.attack", "clients.feature_map"])
def test_a_bad_name_on_the_command_line_exits_2_with_one_line(tmp_path, capsys, key) -> None:
    code = main(["simulate", QUICKSTART, "--out", str(tmp_path / "r"), "--set", f"{key}=zzz"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and key in err and "Traceback" not in err


def test_every_fedkd_mechanism_has_a_calibration_and_every_method_one_entry() -> None:
    assert set(CALIBRATIONS) == set(METHODS)
    assert set(FEDKD_MECHANISMS) == {"dpsgd", "gaussian", "pate"}
    raw = {"rounds": 3, "privacy": {"mechanisms": ["dpsgd"]}}
    assert apply_epsilon("fedkd", raw, 2.0)["privacy"]["dpsgd"]["target_epsilon"] == 2.0
    with pytest.raises(ConfigError, match="method local is non-private"):
        apply_epsilon("local", {}, 1.0)
