"""Opacus DP-SGD with one accountant across rounds, plain model in and out, guards."""

from __future__ import annotations

import json
from collections import OrderedDict

import pytest
import torch
from independent_accounting import replace_one_epsilon
from scipy.stats import chi2
from torch import nn

from fedkd.privacy import accounting as acc
from fedkd.privacy.dpsgd import (
    DPSGDState,
    dp_train,
    epsilon_of,
    refuse_batchnorm,
    release_for_round,
    sample_rate_for,
)

N, FEATURES, CLASSES, BATCH = 64, 6, 3, 16
DELTA = 1e-3  # < 1/N


def _data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, FEATURES, generator=g), torch.randint(0, CLASSES, (N,), generator=g)


def _model(seed: int = 0) -> nn.Module:
    model = nn.Linear(FEATURES, CLASSES)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.weight.copy_(torch.randn(model.weight.shape, generator=g) * 0.1)
        model.bias.zero_()
    return model


def _state(sigma: float = 1.0) -> DPSGDState:
    return DPSGDState(
        noise_multiplier=sigma, max_grad_norm=1.0, sample_rate=sample_rate_for(N, BATCH)
    )


def _train(model, state, epochs, seed, lr=0.1, **kwargs):
    x, y = _data()
    return dp_train(
        model,
        x,
        y,
        state=state,
        epochs=epochs,
        lr=lr,
        batch_size=BATCH,
        generator=torch.Generator().manual_seed(seed),
        **kwargs,
    )


def test_two_rounds_with_carried_state_spend_the_same_epsilon_as_one_run() -> None:
    # Prepare
    state = _state()

    # Execute
    _, after_one = _train(_model(), state, 1, seed=1)
    _, after_two = _train(_model(), after_one, 1, seed=2)
    _, single_run = _train(_model(), state, 2, seed=3)

    # Assert
    assert after_two.steps == single_run.steps == 2 * (N // BATCH)
    assert epsilon_of(after_two, DELTA) == pytest.approx(epsilon_of(single_run, DELTA), abs=1e-6)
    assert epsilon_of(after_two, DELTA) > epsilon_of(after_one, DELTA) > 0.0


def test_training_changes_the_weights_and_leaves_a_plain_rewrappable_module() -> None:
    # Prepare
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}

    # Execute
    loss, state = _train(model, _state(), 2, seed=4)
    _train(model, state, 1, seed=5)  # wrapping the same module again must work

    # Assert
    assert type(model) is nn.Linear
    assert set(model.state_dict()) == {"weight", "bias"}
    assert not any("_module." in k for k in model.state_dict())
    assert not torch.equal(model.state_dict()["weight"], before["weight"])
    assert not model._forward_hooks and not model._backward_hooks
    assert all(not hasattr(p, "grad_sample") and p.grad is None for p in model.parameters())
    assert loss > 0


def test_epsilon_increases_across_rounds() -> None:
    # Prepare
    state = _state()
    eps = []

    # Execute
    for r in range(3):
        _, state = _train(_model(), state, 1, seed=10 + r)
        eps.append(epsilon_of(state, DELTA))

    # Assert
    assert eps[0] < eps[1] < eps[2]


def test_training_is_reproducible_given_the_generator() -> None:
    # Prepare
    a, b = _model(), _model()

    # Execute
    _train(a, _state(), 1, seed=21)
    _train(b, _state(), 1, seed=21)

    # Assert
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)


def test_empty_poisson_batches_still_count_as_steps() -> None:
    # Prepare: 10 examples, B = 1 ⇒ q = 0.1 and P(empty batch) = 0.9**10 ≈ 0.35.
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(10, FEATURES, generator=g), torch.randint(0, CLASSES, (10,), generator=g)
    state = DPSGDState(1.0, 1.0, sample_rate_for(10, 1))
    model, gen = _model(), torch.Generator().manual_seed(1)

    # Execute
    _, new_state = dp_train(model, x, y, state=state, epochs=3, lr=0.1, batch_size=1, generator=gen)

    # Assert: 30 steps of (σ = 1, q = 0.1) are what the accountant is charged.
    assert new_state.steps == 30
    assert (new_state.noise_multiplier, new_state.sample_rate) == (1.0, 0.1)
    expected = replace_one_epsilon(1.0, 0.1, 30, 1e-2)
    assert epsilon_of(new_state, 1e-2) == pytest.approx(expected, rel=1e-9)
    assert torch.isfinite(model.weight).all()


def test_ledger_releases_of_the_rounds_reproduce_the_accountant_epsilon() -> None:
    # Prepare
    state, releases = _state(), []

    # Execute
    for r in range(2):
        _, new_state = _train(_model(), state, 1, seed=30 + r)
        releases.append(release_for_round("client-0", r, new_state.steps - state.steps, state, N))
        state = new_state

    # Assert: the ledger (replace-one, PLD) and the state agree, and both equal an
    # independent dp_accounting computation of (σ, q, all steps).
    from_ledger = acc.pld_epsilon(releases, DELTA)
    independent = replace_one_epsilon(1.0, BATCH / N, state.steps, DELTA)
    assert all(r.relation == "replace_one" for r in releases)
    assert from_ledger == pytest.approx(epsilon_of(state, DELTA), rel=1e-12)
    assert from_ledger == pytest.approx(independent, rel=1e-9)
    assert acc.rdp_epsilon(releases, DELTA) is None  # no replace-one RDP with q < 1


def test_state_survives_a_json_round_trip_with_identical_epsilon() -> None:
    # Prepare
    _, state = _train(_model(), _state(), 1, seed=40)

    # Execute
    restored = DPSGDState.from_dict(json.loads(json.dumps(state.to_dict())))
    _, continued = _train(_model(), restored, 1, seed=41)

    # Assert
    assert restored == state
    assert epsilon_of(restored, DELTA) == epsilon_of(state, DELTA)
    assert continued.steps == 2 * (N // BATCH)


def test_sgd_noise_has_the_calibrated_scale() -> None:
    # Prepare: zero loss ⇒ zero per-example gradients; each step adds N(0, (σC)²) / E[B].
    class ZeroLoss(nn.Module):
        reduction = "mean"

        def forward(self, out: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
            return (out * 0.0).sum()

    model = nn.Linear(FEATURES, 100)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.zero_()
    sigma, steps, lr = 2.0, N // BATCH, 1.0

    # Execute
    _, state = _train(model, _state(sigma=sigma), 1, seed=50, lr=lr, loss_fn=ZeroLoss())

    # Assert: Σ over coordinates of Δθ² / (steps·(lr·σC/B)²) ~ χ²(d).
    params = torch.cat([p.detach().ravel() for p in model.parameters()]).double()
    d = params.numel()
    statistic = float((params**2).sum()) / (steps * (lr * sigma * 1.0 / BATCH) ** 2)
    assert state.steps == steps
    assert chi2.ppf(0.0005, d) <= statistic <= chi2.ppf(0.9995, d)


def test_batchnorm_is_refused_with_a_message_naming_the_module() -> None:
    # Prepare
    model = nn.Sequential(
        OrderedDict(
            [("fc", nn.Linear(FEATURES, 8)), ("bn", nn.BatchNorm1d(8)), ("out", nn.Linear(8, 3))]
        )
    )

    # Execute / Assert
    with pytest.raises(ValueError, match=r"bn \(BatchNorm1d\)"):
        refuse_batchnorm(model)
    with pytest.raises(ValueError, match="BatchNorm1d"):
        _train(model, _state(), 1, seed=0)


def test_a_layernorm_model_is_accepted() -> None:
    # Prepare
    model = nn.Sequential(nn.Linear(FEATURES, 8), nn.LayerNorm(8), nn.Linear(8, 3))

    # Execute / Assert (no exception)
    refuse_batchnorm(model)


def test_a_model_in_eval_mode_is_judged_by_its_modules_and_keeps_its_mode() -> None:
    # Prepare: Opacus' validator also rejects eval mode, which says nothing of the modules.
    good = nn.Sequential(nn.Linear(FEATURES, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    bad = nn.Sequential(nn.Linear(FEATURES, 8), nn.BatchNorm1d(8)).eval()

    # Execute / Assert
    refuse_batchnorm(good)
    with pytest.raises(ValueError, match=r"1 \(BatchNorm1d\)"):
        refuse_batchnorm(bad)
    assert not any(m.training for m in [*good.modules(), *bad.modules()])


def test_the_state_has_no_accountant_to_choose() -> None:
    # Prepare: a state saved by the old code (it carried an accountant and its history).
    old = {**_state().to_dict(), "accountant": "gdp", "accountant_state": {"history": []}}

    # Execute / Assert: the accountant is no part of the state any more ...
    with pytest.raises(TypeError):
        DPSGDState(1.0, 1.0, 0.25, 0, "gdp")
    # ... an old state's accountant is ignored: ε is always the enforced PLD of (σ, q, steps).
    restored = DPSGDState.from_dict(old)
    assert restored == _state()
    assert acc.ENFORCED == "pld"


def test_a_sample_rate_that_does_not_match_the_loader_is_refused() -> None:
    # Prepare
    state = DPSGDState(1.0, 1.0, 0.5)

    # Execute / Assert
    with pytest.raises(ValueError, match="wrong sampling rate"):
        _train(_model(), state, 1, seed=0)


def test_release_for_round_records_the_client_steps() -> None:
    # Execute
    release = release_for_round("client-3", 5, 12, _state(), N)

    # Assert
    assert (release.mechanism, release.scope, release.subject) == ("dpsgd", "example", "client-3")
    assert (release.round, release.steps, release.population) == (5, 12, N)
    assert release.sample_rate == pytest.approx(BATCH / N)


def test_ghost_clipping_gives_the_same_update_as_per_example_gradients() -> None:
    # Prepare: an MLP (two linear layers) without noise and with a clip that binds.
    def mlp() -> nn.Module:
        torch.manual_seed(0)  # the test's own weights; library code never seeds globally
        return nn.Sequential(nn.Linear(FEATURES, 8), nn.ReLU(), nn.Linear(8, CLASSES))

    hooks, ghost = mlp(), mlp()
    state = DPSGDState(0.0, 0.05, sample_rate_for(N, BATCH))

    # Execute: the same Poisson batches (same generator seed), both clipping modes.
    _, s_hooks = _train(hooks, state, 2, seed=60, lr=0.5, momentum=0.9)
    _, s_ghost = _train(ghost, state, 2, seed=60, lr=0.5, momentum=0.9, ghost=True)

    # Assert: identical accounting, the same weights, and training moved them.
    assert s_hooks == s_ghost
    for a, b, c in zip(hooks.parameters(), ghost.parameters(), mlp().parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-5)
        assert not torch.allclose(a, c, atol=1e-3)
    assert not hasattr(ghost[0].weight, "grad_sample")


def test_epsilon_of_accounts_under_the_requested_relation() -> None:
    from independent_accounting import add_remove_epsilon

    # Prepare
    state = DPSGDState(2.0, 1.0, 0.25, steps=40)

    # Execute
    add_remove = epsilon_of(state, DELTA, "add_remove")
    replace_one = epsilon_of(state, DELTA)

    # Assert: each equals dp_accounting's own figure; add/remove is the weaker relation.
    assert add_remove == pytest.approx(add_remove_epsilon(2.0, 0.25, 40, DELTA), rel=1e-9)
    assert replace_one == pytest.approx(replace_one_epsilon(2.0, 0.25, 40, DELTA), rel=1e-9)
    assert add_remove < 0.7 * replace_one
    assert release_for_round("c", 0, 1, state, N, relation="add_remove").relation == "add_remove"


def _trap(x: torch.Tensor, target: int) -> nn.Module:
    """Finite weights whose one hidden unit fires only on ``x[target]``, then overflows."""
    u = x[target] - torch.cat([x[:target], x[target + 1 :]]).mean(0)
    u = u / u.norm()
    others = torch.cat([x[:target], x[target + 1 :]]) @ u
    margin = float(x[target] @ u - others.max())
    scale = 1e4 / margin  # the unit: +5e3 on the target, <= -5e3 on every other row
    model = nn.Sequential(nn.Linear(FEATURES, 4), nn.ReLU(), nn.Linear(4, CLASSES))
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model[0].weight[0] = u * scale
        model[0].bias[0] = -(float(others.max()) + margin / 2) * scale
        model[2].weight[0, 0] = 1e36  # 5e3 * 1e36 overflows float32
    return model


def test_an_example_whose_gradient_is_not_finite_contributes_nothing():
    # A server could craft such weights; unchecked, NaN passes clipping and noise and the
    # model after one step shows whether the trapped example was in the batch.
    x, y = _data()
    x[5] = 0.0
    x[5, 0] = 20.0  # an example unlike the others (randn), that the trap singles out
    model = _trap(x, target=5)
    assert torch.isfinite(torch.cat([p.flatten() for p in model.parameters()])).all()
    assert not torch.isfinite(model(x[5:6])).all() and torch.isfinite(model(x[6:])).all()
    state = DPSGDState(noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=1.0)  # q = 1
    _, new = dp_train(  # on the modified x
        model,
        x,
        y,
        state=state,
        epochs=1,
        lr=0.1,
        batch_size=N,
        generator=torch.Generator().manual_seed(0),
    )
    assert new.steps == 1
    for p in model.parameters():
        assert torch.isfinite(p).all()  # the trapped example was sampled, and zeroed


def test_drop_nonfinite_examples_zeroes_whole_examples_across_parameters():
    from fedkd.privacy.dpsgd import drop_nonfinite_examples

    a, b = nn.Parameter(torch.zeros(3)), nn.Parameter(torch.zeros(2, 2))
    a.grad_sample = torch.ones(4, 3)
    b.grad_sample = torch.ones(4, 2, 2)
    a.grad_sample[1, 0] = float("nan")
    b.grad_sample[3, 1, 1] = float("inf")
    assert drop_nonfinite_examples([a, b]) == 2
    for g in (a.grad_sample, b.grad_sample):
        assert g[[1, 3]].abs().sum() == 0 and (g[[0, 2]] == 1).all()
    assert drop_nonfinite_examples([a, b]) == 0
