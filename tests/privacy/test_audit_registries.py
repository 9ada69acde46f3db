"""No registration replaces what a privacy path relies on: the enforced accountant, the
codec PATE's votes travel in, or a built-in mechanism."""

from __future__ import annotations

import pytest

from fedkd.compress import CODECS
from fedkd.mechanisms import Mechanism, register_mechanism
from fedkd.mechanisms.registry import NO_PRIVACY, get_mechanism
from fedkd.privacy.accounting import ACCOUNTANTS, epsilon
from fedkd.privacy.ledger import Release


def _release() -> Release:
    return Release(
        mechanism="gaussian", scope="client", subject="server", round=1,
        noise_multiplier=1.0, sample_rate=1.0, steps=1, population=10,
    )  # fmt: skip


def test_registering_the_enforced_accountant_again_is_refused_and_epsilon_is_unchanged():
    before = epsilon([_release()], 1e-5)
    original = ACCOUNTANTS["pld"]
    try:
        with pytest.raises(ValueError, match="'pld'"):
            ACCOUNTANTS.register("pld")(lambda releases, delta: 0.0)
        assert epsilon([_release()], 1e-5) == before > 0
    finally:
        ACCOUNTANTS._items["pld"] = original  # undo a silent replacement for later tests


def test_registering_a_taken_codec_name_is_refused():
    original = CODECS["onebit"]
    try:
        with pytest.raises(ValueError, match="'onebit'"):
            CODECS.register("onebit")(CODECS["fp32"])
    finally:
        CODECS._items["onebit"] = original


@pytest.mark.parametrize("name", [NO_PRIVACY, "dpsgd", "gaussian", "pate"])
def test_no_builtin_mechanism_can_be_shadowed(name):
    builtin = get_mechanism(name)
    with pytest.raises(ValueError, match="already registered"):
        register_mechanism(name)(type("Shadow", (Mechanism,), {}))
    assert get_mechanism(name) is builtin
