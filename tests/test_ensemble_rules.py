"""benchmarks/ensemble_rules.py: label-count weighting of the local-model ensemble."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import numpy as np

_DIR = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(_DIR))  # the script imports distill_diagnostics beside it
_SPEC = importlib.util.spec_from_file_location("ensemble_rules", _DIR / "ensemble_rules.py")
ensemble_rules = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(ensemble_rules)


def test_label_count_weighting_ignores_a_client_on_a_class_it_never_saw() -> None:
    # Client 0 saw only class 0 and claims class 1 confidently; client 1 saw both classes.
    probs = np.array([[[0.1, 0.9]], [[0.8, 0.2]]])
    counts = np.array([[50.0, 0.0], [50.0, 50.0]])
    out = ensemble_rules.rules(probs, counts)
    assert out["mean of probabilities"].argmax(1).tolist() == [1]
    weighted = out["label-count weighted probabilities"]
    # class 0: half of each client's p0; class 1: all from client 1.
    np.testing.assert_allclose(weighted, [[0.5 * 0.1 + 0.5 * 0.8, 0.2]])
    assert weighted.argmax(1).tolist() == [0]


def test_label_count_weighting_equals_the_mean_when_every_client_has_the_same_counts() -> None:
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=(3, 5))
    out = ensemble_rules.rules(probs, np.full((3, 4), 7.0))
    np.testing.assert_allclose(
        out["label-count weighted probabilities"], out["mean of probabilities"]
    )


def test_the_knn_selector_answers_rows_near_the_private_data_and_refuses_far_ones() -> None:
    import torch

    private = torch.tensor([[float(i), 0.0] for i in range(10)])  # a line of points 1 apart
    rows = torch.tensor([[4.5, 0.0], [4.5, 50.0]])
    near = ensemble_rules.in_distribution(private, rows, (0.5, 0.9), k=2)
    assert near.shape == (2, 2)
    assert near[:, 0].all() and not near[:, 1].any()
    # A client with no more than k examples answers every row.
    assert ensemble_rules.in_distribution(private[:2], rows, (0.5,), k=2).all()


def test_selected_mean_pools_only_the_answering_clients_and_all_where_none_answered() -> None:
    probs = np.array([[[0.9, 0.1], [0.6, 0.4]], [[0.2, 0.8], [0.0, 1.0]]])  # (K=2, N=2, C=2)
    answers = np.array([[True, False], [False, False]])
    out = ensemble_rules.selected_mean(probs, answers)
    np.testing.assert_allclose(out, [[0.9, 0.1], [0.3, 0.7]])


def test_prior_correction_leaves_balanced_clients_alone_and_raises_a_rare_class() -> None:
    probs = np.array([[[0.6, 0.4]], [[0.6, 0.4]]])
    counts = np.array([[10.0, 10.0], [90.0, 10.0]])  # client 1 saw class 0 nine times as often
    out = ensemble_rules.prior_corrected(probs, counts, pseudo=0.0, power=1.0)
    np.testing.assert_allclose(out[0], probs[0])
    # 0.6 / 0.9 against 0.4 / 0.1: class 1 wins, 0.4/0.1 / (0.6/0.9 + 0.4/0.1) = 6/7.
    np.testing.assert_allclose(out[1], [[1 / 7, 6 / 7]])


def test_score_table_adds_one_knn_rule_per_quantile_and_keeps_the_mean_first() -> None:
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), size=(2, 4))
    counts = np.array([[5.0, 5.0, 0.0], [0.0, 5.0, 5.0]])
    near = np.ones((2, 2, 4), dtype=bool)  # every client answers every row
    table = ensemble_rules.score_table(probs, counts, np.array([0, 1, 2, 1]), near, (0.5, 0.9))
    assert next(iter(table)) == "mean of probabilities"
    knn = [k for k in table if k.startswith("client-side selection")]
    assert knn == [
        "client-side selection, q=0.5 (100% answered)",
        "client-side selection, q=0.9 (100% answered)",
    ]
    np.testing.assert_allclose(table[knn[0]], probs.mean(0))
    assert not any(
        k.startswith("client-side")
        for k in ensemble_rules.score_table(probs, counts, np.zeros(4, int))
    )


def test_vote_share_counts_each_clients_top_class() -> None:
    probs = np.array([[[0.6, 0.4]], [[0.3, 0.7]], [[0.9, 0.1]]])
    np.testing.assert_allclose(ensemble_rules.vote_share(probs), [[2 / 3, 1 / 3]])


def test_weight_average_is_the_size_weighted_mean_of_the_weights() -> None:
    import torch

    a, b = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    with torch.no_grad():
        a.weight.fill_(1.0), a.bias.fill_(0.0), b.weight.fill_(4.0), b.bias.fill_(3.0)
    avg = ensemble_rules.weight_average([a, b], np.array([2.0, 1.0]))
    torch.testing.assert_close(avg.weight, torch.full((1, 2), 2.0))
    torch.testing.assert_close(avg.bias, torch.full((1,), 1.0))
    assert a.weight[0, 0].item() == 1.0  # the inputs are left alone


def test_a_student_distils_true_one_hot_targets_better_than_shuffled_ones(capsys) -> None:
    import torch

    from fedkd.clientdata import splits_for
    from fedkd.config import from_dict

    torch.set_num_threads(1)
    cfg = from_dict(
        {"data": {"validation_fraction": 0.15}, "distill": {"student": "mlp"}, "seed": 0}
    )
    s = splits_for(cfg.data, cfg.seed)
    c = int(s.num_classes)
    true = np.eye(c, dtype=np.float32)[s.y_proxy]
    shuffled = true[np.random.default_rng(1).permutation(len(true))]
    ensemble_rules.distill_targets(
        cfg, s, {"true": true, "shuffled": shuffled}, [1.0], lr=0.1, epochs=3
    )
    lines = capsys.readouterr().out.splitlines()
    found = [re.search(r"distilling the (\w+) on .* best validation ([\d.]+)", ln) for ln in lines]
    acc = {m.group(1): float(m.group(2)) for m in found if m}
    assert set(acc) == {"true", "shuffled"}
    assert acc["true"] > 0.8 > acc["shuffled"]
