"""The student distils the teacher cache, propagated and sharpened when configured."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fedkd.student as student_mod
from fedkd.aggregate import sharpen
from fedkd.config import ConfigError, from_dict
from fedkd.propagate import propagate
from fedkd.teacher import TeacherCache


def _setup(overrides: list[str]):
    cfg = from_dict({"distill": {"student": "linear", "epochs": 1}}, overrides)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 4, 4)).astype(np.float32)
    cache = TeacherCache.empty(40, 3)
    rows = np.arange(0, 40, 2)  # half the proxy labelled
    cache.update(rows, rng.dirichlet(np.ones(3), size=len(rows)).astype(np.float32))
    return cfg, x, cache, rows


def _captured_targets(monkeypatch, overrides):
    cfg, x, cache, rows = _setup(overrides)
    seen = {}

    def fake_train(model, optimizer, x_rows, targets, **kwargs):
        seen["x"], seen["targets"] = x_rows, targets
        return 0.0

    monkeypatch.setattr(student_mod, "train_distill", fake_train)
    student_mod.Student(cfg, (4, 4), 3).distill(x, cache, server_round=1)
    return seen, x, cache, rows


def test_student_distils_the_cached_labels_unchanged_by_default(monkeypatch):
    seen, x, cache, rows = _captured_targets(monkeypatch, [])
    np.testing.assert_array_equal(seen["x"], x[rows])
    np.testing.assert_array_equal(seen["targets"], cache.probs[rows])


@pytest.mark.parametrize("power", [1.0, 3.0])
def test_student_distils_propagated_then_sharpened_labels(monkeypatch, power):
    overrides = ["distill.propagate_neighbors=3", "distill.propagate_alpha=0.7"]
    overrides.append(f"distill.sharpen={power}")
    seen, x, cache, rows = _captured_targets(monkeypatch, overrides)
    # Every proxy row takes part: unlabelled rows get their neighbours' labels.
    seeds = np.where(cache.labelled[:, None], cache.probs, 0.0)
    expected = propagate(x, seeds, neighbors=3, alpha=0.7)
    reached = expected.sum(axis=1) > 0
    assert reached.sum() > len(rows)  # more rows than were labelled
    expected = expected[reached]
    if power != 1.0:
        expected = sharpen(expected, power)
    np.testing.assert_array_equal(seen["x"], x[reached])
    np.testing.assert_allclose(seen["targets"], expected, atol=1e-6)
    assert not np.allclose(
        seen["targets"][::2][: len(rows) // 2], cache.probs[rows][::2][: len(rows) // 2]
    )


def test_student_on_public_features_distils_and_evaluates_in_feature_space(monkeypatch):
    cfg, x, cache, rows = _setup(["distill.public_features=5", "distill.propagate_neighbors=3"])
    student = student_mod.Student(cfg, (4, 4), 3, x_public=x)
    z = student.features.transform_array(x)  # (40, 5) whitened PCA of the proxy
    assert z.shape == (40, 5)
    seen = {}

    def fake_train(model, optimizer, x_rows, targets, **kwargs):
        seen["model"], seen["x"] = model, x_rows
        return 0.0

    monkeypatch.setattr(student_mod, "train_distill", fake_train)
    student.distill(x, cache, server_round=1)
    assert seen["model"] is student.head  # only the head trains
    reached = propagate(z, np.where(cache.labelled[:, None], cache.probs, 0.0), neighbors=3)
    np.testing.assert_array_equal(seen["x"], z[reached.sum(axis=1) > 0])
    y = np.arange(40) % 3
    _, acc = student.evaluate(x, y)
    logits = student.model(torch.from_numpy(x)).detach().numpy()
    assert acc == pytest.approx(float((logits.argmax(1) == y).mean()))


def test_augment_with_student_features_is_refused():
    with pytest.raises(ConfigError, match="distill.augment shifts images"):
        from_dict({"distill": {"augment": True, "feature_map": "scattering"}})


def test_a_cosine_schedule_reaches_the_students_loop_and_changes_it(monkeypatch):
    _, x, cache, _ = _setup([])
    seen = []
    real = student_mod.train_distill

    def spy(*args, **kwargs):
        seen.append(kwargs["cosine"])
        return real(*args, **kwargs)

    monkeypatch.setattr(student_mod, "train_distill", spy)
    weights = []
    for schedule in ("constant", "cosine"):
        cfg_s = from_dict(
            {"distill": {"student": "linear", "epochs": 3}}, [f"distill.lr_schedule={schedule}"]
        )
        s = student_mod.Student(cfg_s, (4, 4), 3)
        s.distill(x, cache, server_round=1)
        weights.append(torch.cat([p.detach().flatten() for p in s.model.parameters()]))
        assert s.optimizer.param_groups[0]["lr"] == cfg_s.distill.lr
    assert seen == [False, True]
    assert not torch.allclose(weights[0], weights[1])
