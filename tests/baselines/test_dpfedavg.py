"""DP-FedAvg with a fixed denominator: sensitivity, noise scale, charging, randomness, ε."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from fedkd.simulations.baselines import run_method
from fedkd.simulations.baselines.calibrate import apply_epsilon
from fedkd.simulations.baselines.dpfedavg import (
    DifferentialPrivacyFixedDenominator,
    clip_update,
    fixed_denominator_sum,
)
from fedkd.simulations.baselines.fedavg import SeededFedAvg
from fedkd.simulations.localgrid import LocalGrid
from flwr.app import Array, ArrayRecord, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import NeighboringRelation, PrivacyConfig, RdpAccountant, SamplingMethod

from fedkd.config import from_dict
from fedkd.rundir import RunDir

from .test_baselines import TINY

S = 2.0


def _mean_over_received(updates, clip_norm):
    """The old aggregate: Flower's wrapper clipped, then FedAvg divided by the replies received."""
    clipped = [clip_update(u, clip_norm) for u in updates]
    return [sum(parts) / len(clipped) for parts in zip(*clipped, strict=True)]


def _l2(a, b):
    return float(np.sqrt(sum(np.sum((x - y) ** 2) for x, y in zip(a, b, strict=True))))


def test_clip_update_bounds_the_whole_update():
    big = [np.full((3, 4), 5.0), np.full(7, -5.0)]
    clipped = clip_update(big, S)
    assert _l2(clipped, [np.zeros((3, 4)), np.zeros(7)]) == pytest.approx(S)
    small = [np.full(2, 0.1)]
    assert np.array_equal(clip_update(small, S)[0], small[0])


def test_removing_one_client_moves_the_fixed_denominator_sum_by_at_most_s_over_k():
    rng = np.random.default_rng(0)
    k, shapes = 6, [(4, 3), (5,)]
    for _ in range(50):
        updates = [[rng.normal(0, rng.uniform(0.1, 3.0), s) for s in shapes] for _ in range(k)]
        full = fixed_denominator_sum(updates, S, k, shapes)
        for j in range(k):
            without = fixed_denominator_sum(updates[:j] + updates[j + 1 :], S, k, shapes)
            assert _l2(full, without) <= S / k * (1 + 1e-12)


def test_the_old_received_count_denominator_moves_by_more_than_s_over_k():
    k, e = 4, [np.array([1.0, 0.0])]
    updates = [[S * e[0]]] * (k - 1) + [[-S * e[0]]]
    fixed_full = fixed_denominator_sum(updates, S, k, [(2,)])
    fixed_less = fixed_denominator_sum(updates[:-1], S, k, [(2,)])
    assert _l2(fixed_full, fixed_less) == pytest.approx(S / k)
    old = _l2(_mean_over_received(updates, S), _mean_over_received(updates[:-1], S))
    assert old == pytest.approx(2 * S / k)  # twice the sensitivity the noise is scaled to
    assert old > S / k * 1.5


def _app(step, fail=()):
    """ClientApp: reply ``w + step`` (or an error, raised, for partition ids in ``fail``)."""
    app = ClientApp()

    @app.train()
    def _train(msg: Message, context) -> Message:
        if int(context.node_config["partition-id"]) in fail:
            raise RuntimeError("lost")
        arrays = msg.content["arrays"].to_numpy_ndarrays()
        reply = ArrayRecord({"w": Array((arrays[0] + step).astype(np.float32))})
        return Message(RecordDict({"arrays": reply}), reply_to=msg)

    return app


def _run_wrapper(app, k, sigma, rounds, dim=5000, max_epsilon=None):
    """Run the wrapper on an in-process grid; return each round's released arrays, accountant."""
    accountant = RdpAccountant(
        PrivacyConfig(
            target_delta=1e-5,
            population_size=k,
            neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
            sampling_method=SamplingMethod.NO_AMPLIFICATION,
            max_epsilon=max_epsilon,
        )
    )
    inner = SeededFedAvg(fraction_evaluate=0.0, min_train_nodes=2, min_available_nodes=k, seed=0)
    strategy = DifferentialPrivacyFixedDenominator(inner, sigma, S, k, accountant=accountant)
    released = []

    def evaluate_fn(server_round, arrays):
        released.append(arrays.to_numpy_ndarrays()[0].astype(np.float64))

    start = ArrayRecord({"w": Array(np.zeros(dim, dtype=np.float32))})
    strategy.start(LocalGrid(app, k), start, num_rounds=rounds, evaluate_fn=evaluate_fn)
    return np.stack(released), accountant


def test_released_noise_has_std_sigma_s_over_k():
    k, sigma = 4, 1.5
    released, accountant = _run_wrapper(_app(0.0), k, sigma, rounds=10)
    noise = np.diff(released, axis=0)  # zero updates: each round's release is pure noise
    assert noise.size == 50_000
    assert noise.std() == pytest.approx(sigma * S / k, rel=0.03)  # σ/2 or σ·S/K' would fail
    assert abs(noise.mean()) < 0.03 * sigma * S / k
    assert accountant.num_releases == 10


def test_lost_replies_count_as_zero_and_never_lower_the_charge():
    k, dim = 4, 8
    step = np.full(dim, 2 * S / np.sqrt(dim))  # norm 2S: clipped to S
    clipped = step / 2
    released, all_in = _run_wrapper(_app(step), k, 1e-4, rounds=3, dim=dim)
    np.testing.assert_allclose(np.diff(released, axis=0), [clipped] * 3, atol=1e-3)
    released, one_lost = _run_wrapper(_app(step, fail={1}), k, 1e-4, rounds=3, dim=dim)
    np.testing.assert_allclose(np.diff(released, axis=0), [clipped * 3 / 4] * 3, atol=1e-3)
    released, none_in = _run_wrapper(_app(step, fail=set(range(k))), k, 1e-4, rounds=3, dim=dim)
    np.testing.assert_allclose(released, 0.0, atol=1e-3)  # w_t plus noise only
    eps = {a.get_epsilon(1e-5) for a in (all_in, one_lost, none_in)}
    assert len(eps) == 1 and all_in.num_releases == one_lost.num_releases == 3


def test_a_round_over_max_epsilon_is_refused_before_anything_is_sent():
    from flwr.serverapp.exception import PrivacyBudgetExhausted

    asked = []
    app = ClientApp()

    @app.train()
    def _train(msg: Message, context) -> Message:
        asked.append(int(context.node_config["partition-id"]))
        return Message(RecordDict({"arrays": msg.content["arrays"]}), reply_to=msg)

    with pytest.raises(PrivacyBudgetExhausted):
        _run_wrapper(app, 3, 1.0, rounds=5, dim=4, max_epsilon=1e-3)
    assert asked == []


def _rows(tmp_path, method, name, raw=None):
    run_method(method, from_dict(raw or TINY), tmp_path / name)
    keep = ("round", "student_accuracy", "student_loss", "bytes_up", "epsilon_client")
    return [{k: r.get(k) for k in keep} for r in RunDir(tmp_path / name).read_metrics()]


def test_dp_noise_is_fresh_while_fedavg_is_reproducible(tmp_path):
    np_state, py_state = np.random.get_state(), random.getstate()  # noqa: NPY002 - checked, not used
    assert _rows(tmp_path, "fedavg", "a") == _rows(tmp_path, "fedavg", "b")
    first, second = _rows(tmp_path, "dp-fedavg", "c"), _rows(tmp_path, "dp-fedavg", "d")
    assert [r["student_loss"] for r in first] != [r["student_loss"] for r in second]
    assert [r["epsilon_client"] for r in first] == [r["epsilon_client"] for r in second]
    # No global RNG was seeded (nor drawn from) by the runs.
    assert random.getstate() == py_state
    after = np.random.get_state()  # noqa: NPY002 - the global state must be untouched
    assert after[0] == np_state[0] and np.array_equal(after[1], np_state[1])


def test_printed_epsilon_matches_an_independent_dp_accounting_recompute(tmp_path):
    from dp_accounting import dp_event
    from dp_accounting.privacy_accountant import NeighboringRelation as NeighborRel
    from dp_accounting.rdp import RdpAccountant as GoogleRdp

    raw = apply_epsilon("dp-fedavg", json.loads(json.dumps(TINY)), 3.0)
    sigma = raw["privacy"]["gaussian"]["noise_multiplier"]
    rows = _rows(tmp_path, "dp-fedavg", "eps", raw)
    summary = json.loads((tmp_path / "eps" / "DONE").read_text())
    assert summary["noise_multiplier"] == sigma
    google = GoogleRdp(neighboring_relation=NeighborRel.ADD_OR_REMOVE_ONE)
    for row in rows:
        google.compose(dp_event.GaussianDpEvent(sigma))
        assert row["epsilon_client"] == pytest.approx(google.get_epsilon(0.1), rel=1e-9)
    # Calibration: σ is the multiplier on S/K without amplification; the run lands on ε.
    assert 2.9 < summary["epsilon_client"] <= 3.0 + 1e-9
