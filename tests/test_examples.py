"""The examples run: a user's CNN on an npz, a 1-D signal model on a ``py:`` source."""

from __future__ import annotations

from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture
def examples_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))


def test_own_cnn_on_npz_example_trains_its_student(tmp_path, examples_on_path):
    import own_cnn_npz

    result = own_cnn_npz.main(
        [
            "--rounds",
            "2",
            "--clients",
            "3",
            "--npz",
            str(tmp_path / "d.npz"),
            "--out",
            str(tmp_path / "r"),
        ]
    )

    assert result.config.distill.student == "usernets:OwnCNN"
    assert [r["round"] for r in result.rows] == [1, 2]
    assert result.rows[-1]["student_accuracy"] > 0.2  # 10 classes


def test_signal_example_trains_a_conv1d_student(tmp_path, examples_on_path):
    import signal_1d

    result = signal_1d.main(["--rounds", "2", "--clients", "3", "--out", str(tmp_path / "r")])

    assert type(result.student).__name__ == "SignalNet"
    assert result.rows[-1]["student_accuracy"] > 0.3  # 4 classes
