"""End to end on the in-process grid: rounds, determinism, resume, outputs."""

from __future__ import annotations

import json

import pytest
from fedkd.simulations.runner import simulate

from fedkd.config import from_dict

BASE = {
    "rounds": 2,
    "clients": {"num_clients": 3, "local_epochs": 3, "models": ["mlp", "cnn"], "lr": 0.1},
    "distill": {"epochs": 5, "proxy_per_round": 60, "codec": "fp16"},
    "runtime": {"backend": "inprocess"},
}


def _run(tmp_path, name, overrides=(), resume=False):
    cfg = from_dict(BASE, list(overrides))
    return simulate(cfg, tmp_path / name, resume=resume), tmp_path / name


def test_three_clients_two_rounds_write_all_outputs(tmp_path):
    summary, out = _run(tmp_path, "a")
    assert summary["rounds_completed"] == 2
    for name in ("config.yaml", "metrics.csv", "metrics.json", "student.pt", "metrics.png", "DONE"):
        assert (out / name).exists(), name
    rows = json.loads((out / "metrics.json").read_text())["rounds"]
    assert [r["round"] for r in rows] == [1, 2]
    for row in rows:
        assert row["clients"] == 3
        assert row["bytes_up"] > 0 and row["bytes_down"] > 0
        assert 0.0 <= row["student_accuracy"] <= 1.0
        assert 0.0 <= row["teacher_accuracy"] <= 1.0
    header = (out / "metrics.csv").read_text().splitlines()[0].split(",")
    for col in (
        "round",
        "student_accuracy",
        "student_loss",
        "teacher_accuracy",
        "bytes_up",
        "bytes_down",
        "clients",
        "seconds",
    ):
        assert col in header
    # Student learns something in two rounds (chance is 0.1).
    assert rows[-1]["student_accuracy"] > 0.3


def test_same_seed_same_metrics_and_other_seed_differs(tmp_path):
    keys = ("student_accuracy", "student_loss", "teacher_accuracy", "bytes_up")
    _, a = _run(tmp_path, "a")
    _, b = _run(tmp_path, "b")
    _, c = _run(tmp_path, "c", ["seed=7"])
    ra, rb, rc = (json.loads((p / "metrics.json").read_text())["rounds"] for p in (a, b, c))
    assert [[r[k] for k in keys] for r in ra] == [[r[k] for k in keys] for r in rb]
    assert [r["student_loss"] for r in ra] != [r["student_loss"] for r in rc]


@pytest.mark.parametrize(
    "extra",
    [
        [],
        ["distill.digest_target=student"],
        # Every row relabelled every round: round 3's targets average those of rounds 1-2.
        ["distill.teacher_ema=0.5", "distill.proxy_per_round=1.0"],
    ],
)
def test_resume_equals_uninterrupted(tmp_path, extra):
    keys = ("student_accuracy", "student_loss", "teacher_accuracy", "bytes_up", "bytes_down")
    _, full = _run(tmp_path, "full", ["rounds=3", *extra])
    # Interrupted: a run of 2 rounds, then resumed to 3 with the same config on disk (with
    # the student as digest target, the labels sent in round 3 come from the checkpoint).
    _, part = _run(tmp_path, "part", ["rounds=2", *extra])
    cfg_file = part / "config.yaml"
    cfg_file.write_text(cfg_file.read_text().replace("rounds: 2", "rounds: 3"))
    (part / "DONE").unlink()
    cfg3 = from_dict(BASE, ["rounds=3", *extra])
    simulate(cfg3, part, resume=True)
    rf, rp = (json.loads((p / "metrics.json").read_text())["rounds"] for p in (full, part))
    assert [[r[k] for k in keys] for r in rf] == [[r[k] for k in keys] for r in rp]


def test_fresh_run_refuses_a_used_directory(tmp_path):
    from fedkd.rundir import RunDirError, RunFinished

    _run(tmp_path, "a", ["rounds=1"])
    with pytest.raises(RunFinished, match="already holds this run, finished"):
        _run(tmp_path, "a", ["rounds=1"])
    with pytest.raises(RunDirError, match="holds a run of another config; pass --out"):
        _run(tmp_path, "a", ["rounds=1", "seed=3"])


def test_teacher_labels_are_sent_down_only_when_clients_digest_them(tmp_path):
    _, with_digest = _run(tmp_path, "d1", ["clients.digest_epochs=1", "clients.local_epochs=1"])
    _, no_digest = _run(tmp_path, "d0", ["clients.digest_epochs=0", "clients.local_epochs=1"])
    r1, r0 = (
        json.loads((p / "metrics.json").read_text())["rounds"] for p in (with_digest, no_digest)
    )
    assert r1[0]["bytes_down"] == r0[0]["bytes_down"]  # round 1: no teacher yet either way
    # 60 fp16 labels of 10 classes plus their indices, to each of 3 clients.
    assert r1[1]["bytes_down"] - r0[1]["bytes_down"] >= 3 * 60 * 10 * 2
    assert r0[1]["bytes_down"] == r0[0]["bytes_down"]


def test_joint_distillation_gets_the_teacher_rows_without_a_digest_and_changes_the_run(tmp_path):
    opts = ["clients.digest_epochs=0", "clients.local_epochs=1"]
    _, plain = _run(tmp_path, "j0", opts)
    _, joint = _run(tmp_path, "j1", [*opts, "clients.joint_distill=1.0"])
    r0, r1 = (json.loads((p / "metrics.json").read_text())["rounds"] for p in (plain, joint))
    # Round 2: the 60 fp16 teacher rows of 10 classes go to each of 3 clients.
    assert r1[1]["bytes_down"] - r0[1]["bytes_down"] >= 3 * 60 * 10 * 2
    assert r1[0]["student_loss"] == r0[0]["student_loss"]  # round 1: nothing to distill yet
    # Round 2: the clients trained towards those rows, so their replies and the student differ.
    assert r1[1]["student_loss"] != r0[1]["student_loss"]


def test_a_dp_sgd_run_on_public_features_with_propagation_completes(tmp_path):
    summary, out = _run(
        tmp_path,
        "pf",
        [
            "clients.models=[linear]",
            "clients.public_features=8",
            "clients.digest_epochs=0",
            "clients.local_epochs=1",
            "clients.batch_size=1024",
            "distill.propagate_neighbors=5",
            "distill.sharpen=4",
            "privacy.mechanisms=[dpsgd]",
            "privacy.dpsgd.target_epsilon=3",
        ],
    )
    assert summary["rounds_completed"] == 2
    assert 0 < summary["epsilon_example"] <= 3.0
    rows = json.loads((out / "metrics.json").read_text())["rounds"]
    assert rows[-1]["student_accuracy"] > 0.15  # chance 0.1; 8 fresh-noise runs: 0.217-0.228


def test_student_digest_target_sends_the_student_on_the_whole_proxy(tmp_path):
    opts = ["clients.digest_epochs=1", "clients.local_epochs=1", "rounds=3"]
    _, teacher = _run(tmp_path, "t", opts)
    _, student = _run(tmp_path, "s", [*opts, "distill.digest_target=student"])
    rt, rs = (json.loads((p / "metrics.json").read_text())["rounds"] for p in (teacher, student))
    # Round 1: nothing to digest yet; only the config sent differs (the key's ~40 bytes).
    assert 0 < rs[0]["bytes_down"] - rt[0]["bytes_down"] < 3 * 60
    # Round 2 on: the whole proxy (digits: 431 rows, 10 classes, fp16) instead of 60 rows.
    assert rs[1]["bytes_down"] - rt[1]["bytes_down"] >= 3 * (431 - 60) * 10 * 2
    assert [r["student_loss"] for r in rs[1:]] != [r["student_loss"] for r in rt[1:]]
    assert rs[-1]["student_accuracy"] > 0.3


def test_selective_fd_mixup_and_early_stop_run_and_change_the_student(tmp_path):
    opts = ["clients.digest_epochs=1", "clients.local_epochs=1", "distill.epochs=12"]
    _, base = _run(tmp_path, "b", opts)
    new = [
        *opts,
        "distill.max_entropy=0.9",
        "distill.mixup=0.2",
        "distill.early_stop=2",
        "distill.holdout_fraction=0.2",
    ]
    summary, out = _run(tmp_path, "n", new)
    assert summary["rounds_completed"] == 2
    rb, rn = (json.loads((p / "metrics.json").read_text())["rounds"] for p in (base, out))
    # Ambiguous rows (weak clients after one local epoch: many) are not sent down for the
    # digest: fewer bytes in round 2.
    assert rn[1]["bytes_down"] < rb[1]["bytes_down"]
    assert rn[-1]["student_loss"] != rb[-1]["student_loss"]
    assert rn[-1]["student_accuracy"] > 0.15  # chance 0.1 (base: 0.53, this: 0.24)


def test_a_share_of_the_proxy_runs_as_the_count_it_stands_for(tmp_path):
    from fedkd.clientdata import splits_for

    cfg = from_dict(BASE)
    rows = round(0.25 * len(splits_for(cfg.data, cfg.seed).x_proxy))
    keys = ("student_accuracy", "student_loss", "teacher_accuracy", "bytes_up")
    _, share = _run(tmp_path, "share", ["distill.proxy_per_round=0.25", "rounds=1"])
    _, count = _run(tmp_path, "count", [f"distill.proxy_per_round={rows}", "rounds=1"])
    _, other = _run(tmp_path, "other", [f"distill.proxy_per_round={rows + 20}", "rounds=1"])
    rs, rc, ro = (
        json.loads((p / "metrics.json").read_text())["rounds"] for p in (share, count, other)
    )
    assert [[r[k] for k in keys] for r in rs] == [[r[k] for k in keys] for r in rc]
    assert rs[0]["bytes_up"] < ro[0]["bytes_up"]


def test_vote_codec_trains_exactly_as_onebit_on_fewer_bytes(tmp_path):
    # The same top-1 votes: 4 bits per row for digits' 10 classes instead of 10. (The
    # downlink differs by the codec's name in the run config sent down.)
    keys = ("student_accuracy", "student_loss", "teacher_accuracy")
    _, one = _run(tmp_path, "onebit", ["distill.codec=onebit"])
    _, vote = _run(tmp_path, "vote", ["distill.codec=vote"])
    ro, rv = (json.loads((p / "metrics.json").read_text())["rounds"] for p in (one, vote))
    assert [[r[k] for k in keys] for r in ro] == [[r[k] for k in keys] for r in rv]
    # 60 rows of 10 classes per client: 75 bytes of one-hot bits against 30 of indices,
    # under a key one character longer ("index" against "bits").
    assert [r["bytes_up"] for r in rv] == [r["bytes_up"] - 3 * 45 + 3 * 1 for r in ro]


def test_teacher_ema_changes_the_students_targets_from_round_two(tmp_path):
    opts = ["distill.proxy_per_round=1.0", "clients.local_epochs=1"]
    _, base = _run(tmp_path, "b", opts)
    _, ema = _run(tmp_path, "e", [*opts, "distill.teacher_ema=0.5"])
    rb, re = (json.loads((p / "metrics.json").read_text())["rounds"] for p in (base, ema))
    # Round 1 has nothing to average with; from round 2 the student trains on other targets.
    assert rb[0]["student_loss"] == re[0]["student_loss"]
    assert rb[1]["student_loss"] != re[1]["student_loss"]
    # What the clients release and are sent is unchanged by it: the same bytes both ways.
    assert [r["bytes_up"] for r in rb] == [r["bytes_up"] for r in re]
