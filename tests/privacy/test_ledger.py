"""The privacy ledger: validation, faithful history, JSON round trips, atomic save, clear errors."""

from __future__ import annotations

import json

import pytest

from fedkd.privacy.ledger import PrivacyLedger, Release


def _dpsgd(subject: str = "client-0", round_: int = 0, steps: int = 10) -> Release:
    return Release(
        mechanism="dpsgd",
        scope="example",
        subject=subject,
        round=round_,
        noise_multiplier=1.1,
        sample_rate=0.05,
        steps=steps,
        population=200,
    )


def _pate(round_: int = 0) -> Release:
    return Release(
        mechanism="pate",
        scope="client",
        subject="server",
        round=round_,
        noise_multiplier=40.0,
        sample_rate=1.0,
        steps=12,
        sigma_threshold=150.0,
        threshold_checks=30,
        population=250,
    )


def _ledger() -> PrivacyLedger:
    ledger = PrivacyLedger()
    ledger.append(_dpsgd("client-0", 0))
    ledger.append(_dpsgd("client-1", 0, steps=7))
    ledger.append(_pate(0))
    ledger.append(_dpsgd("client-0", 1))
    return ledger


def test_for_subject_returns_that_subjects_releases_in_order() -> None:
    # Prepare
    ledger = _ledger()

    # Execute
    mine = ledger.for_subject("client-0")

    # Assert
    assert [r.round for r in mine] == [0, 1]
    assert all(r.subject == "client-0" for r in mine)
    assert ledger.subjects() == ("client-0", "client-1", "server")
    assert len(ledger) == 4


def test_identical_consecutive_releases_are_kept_as_separate_entries() -> None:
    # Prepare
    ledger = PrivacyLedger()
    release = _dpsgd()

    # Execute
    ledger.append(release)
    ledger.append(release)

    # Assert
    assert ledger.releases == (release, release)


def test_releases_is_an_immutable_snapshot() -> None:
    # Prepare
    ledger = _ledger()

    # Execute
    snapshot = ledger.releases
    ledger.append(_dpsgd("client-2"))

    # Assert
    assert isinstance(snapshot, tuple)
    assert len(snapshot) == 4
    assert len(ledger.releases) == 5


def test_dict_round_trip_preserves_every_field() -> None:
    # Prepare
    ledger = _ledger()

    # Execute
    restored = PrivacyLedger.from_dict(json.loads(json.dumps(ledger.to_dict())))

    # Assert
    assert restored == ledger
    assert restored.releases[2].sigma_threshold == 150.0
    assert restored.releases[2].threshold_checks == 30


def test_ledgers_with_different_histories_are_not_equal() -> None:
    # Prepare
    a, b = _ledger(), _ledger()

    # Execute
    b.append(_dpsgd("client-0", 2))

    # Assert
    assert a != b
    assert a == _ledger()


def test_save_then_load_gives_an_equal_ledger_and_leaves_no_temp_file(tmp_path) -> None:
    # Prepare
    ledger = _ledger()
    path = tmp_path / "ckpt" / "ledger.json"

    # Execute
    ledger.save(path)
    loaded = PrivacyLedger.load(path)

    # Assert
    assert loaded == ledger
    assert sorted(p.name for p in path.parent.iterdir()) == ["ledger.json"]


def test_save_replaces_an_existing_file_in_place(tmp_path) -> None:
    # Prepare
    path = tmp_path / "ledger.json"
    PrivacyLedger([_dpsgd()]).save(path)
    longer = _ledger()

    # Execute
    longer.save(path)

    # Assert
    assert PrivacyLedger.load(path) == longer
    assert len(list(tmp_path.iterdir())) == 1


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        json.dumps({"version": 1}),
        json.dumps({"version": 99, "releases": []}),
        json.dumps({"version": 1, "releases": [{"mechanism": "dpsgd"}]}),
        json.dumps(
            {
                "version": 1,
                "releases": [
                    {
                        "mechanism": "dpsgd",
                        "scope": "example",
                        "subject": "client-0",
                        "round": 0,
                        "noise_multiplier": -1.0,
                        "sample_rate": 0.1,
                        "steps": 3,
                    }
                ],
            }
        ),
        json.dumps([1, 2, 3]),
    ],
    ids=["bad-json", "no-releases", "bad-version", "missing-fields", "negative-sigma", "a-list"],
)
def test_load_of_a_malformed_file_raises_value_error_naming_the_file(tmp_path, content) -> None:
    # Prepare
    path = tmp_path / "broken-ledger.json"
    path.write_text(content, encoding="utf-8")

    # Execute / Assert
    with pytest.raises(ValueError, match="broken-ledger.json"):
        PrivacyLedger.load(path)


def test_integral_json_numbers_are_accepted_for_float_fields() -> None:
    # Prepare
    data = _ledger().to_dict()
    data["releases"][2]["noise_multiplier"] = 40
    data["releases"][2]["sample_rate"] = 1

    # Execute
    restored = PrivacyLedger.from_dict(data)

    # Assert
    assert restored.releases[2].noise_multiplier == 40.0
    assert isinstance(restored.releases[2].sample_rate, float)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"mechanism": "gdp-sgd"}, "mechanism"),
        ({"scope": "client"}, "scope"),
        ({"subject": ""}, "subject"),
        ({"round": -1}, "round"),
        ({"steps": 1.5}, "steps"),
        ({"noise_multiplier": 0.0}, "noise_multiplier"),
        ({"noise_multiplier": float("inf")}, "noise_multiplier"),
        ({"sample_rate": 0.0}, "sample_rate"),
        ({"sample_rate": 1.2}, "sample_rate"),
        ({"population": 0}, "population"),
        ({"threshold_checks": 5}, "PATE fields"),
    ],
)
def test_invalid_release_fields_are_refused(changes, message) -> None:
    # Prepare
    fields = _dpsgd().to_dict() | changes

    # Execute / Assert
    with pytest.raises(ValueError, match=message):
        Release(**fields)


def test_pate_threshold_checks_need_a_positive_sigma_threshold() -> None:
    # Prepare
    fields = _pate().to_dict() | {"sigma_threshold": None}

    # Execute / Assert
    with pytest.raises(ValueError, match="sigma_threshold"):
        Release(**fields)


def test_append_refuses_something_that_is_not_a_release() -> None:
    # Prepare
    ledger = PrivacyLedger()

    # Execute / Assert
    with pytest.raises(TypeError, match="Release"):
        ledger.append(_dpsgd().to_dict())  # type: ignore[arg-type]
