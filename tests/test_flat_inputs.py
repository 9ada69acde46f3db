"""The quickstart recipe, unchanged, on flat-feature data: no step needs an image."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from fedkd.simulations import api

from fedkd import models
from fedkd.models import SmallCNN1d

QUICKSTART = Path(__file__).resolve().parents[1] / "simulations" / "configs" / "quickstart.yaml"


def _blobs(n: int = 360, features: int = 12, classes: int = 3) -> dict[str, np.ndarray]:
    """Gaussian blobs: class k centred at +2 on feature k, unit noise (standardised floats)."""
    rng = np.random.default_rng(15)
    y = np.arange(n) % classes
    x = rng.normal(size=(n, features))
    x[np.arange(n), y] += 2.0
    return {"x_train": x.astype(np.float32), "y_train": y}


@pytest.fixture(scope="module")
def flat_run(tmp_path_factory):
    """Quickstart with only the size cut: 3 clients, 2 rounds, in-process."""
    caplog_records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            caplog_records.append(record)

    models._log_flat_cnn.cache_clear()  # logged once per process: make this run log it
    handler = Keep(logging.INFO)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        result = api.run(
            QUICKSTART,
            overrides=["rounds=2", "clients.num_clients=3", "runtime.backend=inprocess"],
            data=_blobs(),
            out=tmp_path_factory.mktemp("flat") / "run",
        )
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    return result, [r.getMessage() for r in caplog_records]


def test_quickstart_recipe_learns_flat_features_above_chance(flat_run):
    result, _ = flat_run
    cfg = result.config
    assert "cnn" in cfg.clients.models and cfg.distill.student == "cnn"  # the defaults ran
    assert cfg.distill.augment
    assert [r["round"] for r in result.rows] == [1, 2]
    assert result.rows[-1]["student_accuracy"] > 0.6  # chance is 1/3
    assert result.rows[-1]["teacher_accuracy"] > 0.6


def test_flat_run_uses_the_1d_cnn_and_says_which_settings_are_moot(flat_run):
    result, messages = flat_run
    assert isinstance(result.student, SmallCNN1d)
    assert any("model 'cnn' on flat inputs of 12 features" in m for m in messages)
    assert any("distill.augment: inputs of shape (12,) are not images" in m for m in messages)
    assert any("distill.proxy_per_round=0.35 of the proxy's" in m for m in messages)
