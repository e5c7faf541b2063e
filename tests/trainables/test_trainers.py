"""The trainers against independent oracles: torch.optim loops, materialised Jacobians, closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from tests.oracles import dense_jacobian, flat_params, interrupted_run, outputs_at, tiny_config
from trainables import Data, Trial, batch_indices
from trainables.linearise import loss_fn


def _run_steps(trial: Trial, steps: int) -> list[torch.Tensor]:
    """Drive a trial step by step; return θ after every step (flattened)."""
    thetas = []
    for _ in range(steps):
        trial.advance()
        thetas.append(flat_params(trial.model))
    return thetas


@pytest.mark.parametrize(
    "opt",
    [
        dict(optimizer="sgd", momentum=0.0),
        dict(optimizer="sgd", momentum=0.9),
        dict(optimizer="adam", lr=1e-2),
    ],
)
def test_k1_follows_plain_sgd_step_for_step(opt):
    """K=1 relinearises before every step, so every step is an ordinary gradient step."""
    cfg = tiny_config(**opt)
    plain, lin = Trial({**cfg, "trainer": "plain"}), Trial({**cfg, "trainer": "linearised", "k": 1})
    for a, b in zip(_run_steps(plain, 30), _run_steps(lin, 30), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert lin.feature_updates == 29  # a move before each of steps 2…30

    # the records: same batch losses; the evaluated predictor is the last linear model
    # f(θ_{t-1}) + J(θ_{t-1})(θ_t − θ_{t-1}), within O(lr²) of the network f(θ_t)
    plain_recs = list(Trial({**cfg, "trainer": "plain"}).records())
    lin_recs = list(Trial({**cfg, "trainer": "linearised", "k": 1}).records())
    assert len(plain_recs) == len(lin_recs) == 4
    for a, b in zip(plain_recs, lin_recs, strict=True):
        assert a["step"] == b["step"] and a["feature_updates"] == b["feature_updates"]
        assert a["batch_loss"] == pytest.approx(b["batch_loss"], rel=1e-12, nan_ok=True)
        assert a["test_loss"] == pytest.approx(b["test_loss"], rel=1e-2)
    # a measure that is off is NaN in both records, and NaN != NaN
    assert _nan_as_none(plain_recs[0]) == _nan_as_none(
        {**lin_recs[0], "elapsed_s": plain_recs[0]["elapsed_s"]}
    )


@pytest.mark.parametrize(
    "opt",
    [
        dict(optimizer="sgd", lr=0.1, momentum=0.0),
        dict(optimizer="sgd", lr=0.1, momentum=0.9),
        dict(optimizer="adam", lr=1e-2),
    ],
)
def test_plain_reproduces_handwritten_torch_optim_loop(opt):
    cfg = tiny_config(trainer="plain", **opt)
    trial = Trial(cfg)
    thetas = _run_steps(trial, 25)

    # the oracle: an independently built model with the same init, a plain torch.optim loop
    oracle = Trial(cfg).model
    params = list(oracle.parameters())
    if opt["optimizer"] == "adam":
        optim = torch.optim.Adam(params, lr=opt["lr"])
    else:
        optim = torch.optim.SGD(params, lr=opt["lr"], momentum=opt["momentum"])
    data = trial.data
    for step in range(25):
        idx = batch_indices(cfg.get("seed", 0), len(data.y_train), cfg["batch_size"], step)
        optim.zero_grad()
        torch.nn.functional.cross_entropy(oracle(data.x_train[idx]), data.y_train[idx]).backward()
        optim.step()
        torch.testing.assert_close(flat_params(oracle), thetas[step], rtol=1e-12, atol=1e-12)


CNN_ON_DIGITS = dict(model="cnn", dataset="digits", channels=4)  # channels-last on the CPU


@pytest.mark.parametrize("model", [{}, CNN_ON_DIGITS], ids=["mlp", "cnn"])
def test_k_inf_output_is_first_order_taylor_expansion_at_init(model):
    cfg = tiny_config(k="inf", lr=0.2, total_steps=40, **model)
    trial = Trial(cfg)
    theta0 = flat_params(trial.model)
    x = trial.data.x_test[:20]
    J = dense_jacobian(trial.model, theta0, x)  # (n·c) × P at θ₀
    f0 = outputs_at(trial.model, theta0, x)
    for rec in trial.records():
        theta = flat_params(trial.model)
        expected = f0 + (J @ (theta - theta0)).view_as(f0)
        torch.testing.assert_close(trial.predict(x), expected, rtol=1e-10, atol=1e-10)
        assert rec["feature_updates"] == 0
    assert (theta - theta0).norm() > 0.1  # the parameters really moved far from θ₀
    # and the network itself is NOT its linearisation there, so the check above has teeth
    assert (outputs_at(trial.model, theta, x) - expected).abs().max() > 1e-3


def test_linearised_gradient_is_jacobian_transpose_times_output_gradient():
    cfg = tiny_config(k=7, lr=0.3)
    trial = Trial(cfg)
    _run_steps(trial, 3)  # mid-phase: θ ≠ θ_s
    from trainables.steps import param_delta as _delta

    x, y = trial.data.x_train[:16], trial.data.y_train[:16]
    from trainables.linearise import linearised_grad

    grads, _, f_lin = linearised_grad(
        trial.model, trial.theta_s, _delta(trial.theta, trial.theta_s), x, y, "cross_entropy"
    )
    theta_s = torch.cat([t.reshape(-1) for t in trial.theta_s.values()])
    theta = flat_params(trial.model)
    J = dense_jacobian(trial.model, theta_s, x)
    f_lin_oracle = (outputs_at(trial.model, theta_s, x).reshape(-1) + J @ (theta - theta_s)).view(
        16, -1
    )
    torch.testing.assert_close(f_lin, f_lin_oracle, rtol=1e-10, atol=1e-12)
    f = f_lin_oracle.clone().requires_grad_()
    (g,) = torch.autograd.grad(loss_fn("cross_entropy", f, y), f)
    torch.testing.assert_close(
        torch.cat([t.reshape(-1) for t in grads]), J.T @ g.reshape(-1), rtol=1e-10, atol=1e-12
    )


def test_model_linear_in_parameters_gives_the_same_trajectory_for_every_k():
    records = {}
    for k in (1, 3, 10, "inf"):
        cfg = tiny_config(depth=0, k=k, optimizer="sgd", momentum=0.9, lr=0.2)
        trial = Trial(cfg)
        records[k] = (list(trial.records()), flat_params(trial.model))
    ref_records, ref_theta = records[1]
    for k, (recs, theta) in records.items():
        torch.testing.assert_close(theta, ref_theta, rtol=1e-10, atol=1e-12)
        for a, b in zip(recs, ref_records, strict=True):
            assert a["test_loss"] == pytest.approx(b["test_loss"], rel=1e-10)
        assert recs[-1]["feature_updates"] == (0 if k == "inf" else math.ceil(30 / k) - 1)


@pytest.mark.slow
def test_il_with_k_inf_converges_to_min_norm_gauss_newton_step_for_mse():
    """Gradient flow on the linearised least-squares problem from δ=0 → δ = −J⁺r: the GN step
    with η=1, λ→0. Checked against torch.linalg.pinv of a materialised Jacobian."""
    cfg = tiny_config(
        loss="mse", k="inf", batch_size=0, n_train=12, width=16, lr=0.5, total_steps=4000, eval_every=4000,
        probe_size=0, val_size=0.1,  # the 12 examples this lr is stable on (lr·λ_max < 2)
    )  # fmt: skip
    trial = Trial(cfg)
    x, y = trial.data.x_train, trial.data.y_train
    theta0 = flat_params(trial.model)
    J = dense_jacobian(trial.model, theta0, x)  # 48 × P, P ≫ 48: underdetermined
    r = (outputs_at(trial.model, theta0, x) - torch.nn.functional.one_hot(y, 4).to(J)).reshape(-1)
    min_norm_step = -torch.linalg.pinv(J) @ r
    list(trial.records())
    delta = flat_params(trial.model) - theta0
    torch.testing.assert_close(delta, min_norm_step, rtol=1e-4, atol=1e-6)

    # the same direction from the Gauss-Newton trainer's exact solver at λ = 0, η = 1
    from trainables.gauss_newton import gauss_newton_direction

    gn = Trial({**cfg, "trainer": "gauss_newton", "lr": 1.0, "damping": 0.0, "solver": "exact"})
    d, _, _ = gauss_newton_direction(gn.model, gn.theta, x, y, "mse", 0.0, solver="exact")
    torch.testing.assert_close(
        -torch.cat([t.reshape(-1) for t in d.values()]), min_norm_step, rtol=1e-8, atol=1e-10
    )


def test_feature_update_counts_and_schedules():
    def final(**kw):
        return list(Trial(tiny_config(probe_size=0, **kw)).records())[-1]["feature_updates"]

    assert final(k=10, total_steps=60, eval_every=60) == 5  # moves after steps 10…50, not 60
    assert final(k=7, total_steps=60, eval_every=60) == 8  # 7…56
    assert final(k="inf", total_steps=60) == 0
    assert final(k=60, total_steps=60) == 0  # K ≥ T is K = ∞
    assert final(k=1, total_steps=60) == 59
    assert (
        final(k=4, schedule="geometric", growth=2.0, total_steps=60) == 3
    )  # after steps 4, 12, 28
    assert final(schedule="one_shot", one_shot_at=13, total_steps=60) == 13
    assert final(trainer="plain", total_steps=20) == 19


@pytest.mark.parametrize(
    "kw",
    [
        dict(k=1), dict(k=7), dict(k=10), dict(k=59), dict(k=60), dict(k="inf"),
        dict(k=3, schedule="geometric", growth=1.7), dict(k=1, schedule="geometric", growth=1.1),
        dict(schedule="one_shot", one_shot_at=13), dict(schedule="one_shot", one_shot_at=100),
        dict(trainer="plain"), dict(trainer="gauss_newton"),
    ],
)  # fmt: skip
def test_move_membership_equals_the_materialised_schedule(kw):
    from trainables.config import TrialConfig
    from trainables.schedule import is_move_step, move_steps

    cfg = TrialConfig.from_mapping(tiny_config(total_steps=60, **kw))
    expected = set(move_steps(cfg))
    assert {t for t in range(-2, 130) if is_move_step(cfg)(t)} == expected


def test_one_shot_is_plain_then_a_fixed_linearisation():
    cfg = tiny_config(schedule="one_shot", one_shot_at=12, total_steps=30, lr=0.2)
    trial = Trial(cfg)
    thetas = _run_steps(trial, 30)
    plain = Trial({**cfg, "trainer": "plain"})
    plain_thetas = _run_steps(plain, 12)
    torch.testing.assert_close(thetas[11], plain_thetas[11], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        torch.cat([t.reshape(-1) for t in trial.theta_s.values()]), thetas[11]
    )
    assert trial.feature_updates == 12


def test_solve_to_convergence_ends_phases_before_the_cap():
    cfg = tiny_config(
        k=400, solve_to_convergence=True, batch_size=0, total_steps=400, eval_every=400, lr=0.5,
        convergence_patience=10, convergence_rtol=1e-3, optimizer="adam", probe_size=0,
    )  # fmt: skip
    capped = list(Trial({**cfg, "solve_to_convergence": False}).records())[-1]
    converged = list(Trial(cfg).records())[-1]
    assert capped["feature_updates"] == 0  # k = T is K = ∞ without convergence moves
    assert converged["feature_updates"] >= 2  # each linear model trained until it stalled


def test_reset_optimizer_clears_momentum_at_feature_updates():
    cfg = tiny_config(k=5, momentum=0.9, total_steps=10)
    keep, reset = Trial(cfg), Trial({**cfg, "reset_optimizer": True})
    a, b = _run_steps(keep, 10), _run_steps(reset, 10)
    torch.testing.assert_close(a[4], b[4], rtol=1e-12, atol=1e-12)  # identical up to the first move
    assert (a[5] - b[5]).norm() > 1e-6  # then the momentum buffer differs


def test_divergence_ends_cleanly_with_a_flagged_record():
    recs = list(
        Trial(tiny_config(lr=1e6, loss="mse", total_steps=200, eval_every=10, k=1)).records()
    )
    assert recs[-1]["diverged"] is True
    assert recs[-1]["step"] < 200
    assert not any(r["diverged"] for r in recs[:-1])


def test_same_config_and_seed_give_identical_records():
    def clean(recs):
        return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in recs]

    cfg = tiny_config(k=5, momentum=0.5)
    a, b = clean(Trial(cfg).records()), clean(Trial(cfg).records())
    assert a == b or all(
        (x == y) or (isinstance(x, float) and math.isnan(x) and math.isnan(y))
        for ra, rb in zip(a, b, strict=True)
        for x, y in zip(ra.values(), rb.values(), strict=True)
    )
    c = clean(Trial({**cfg, "seed": 1}).records())
    assert c[-1]["test_loss"] != a[-1]["test_loss"]


@pytest.mark.parametrize(
    "overrides",
    [
        dict(k=4, optimizer="adam", lr=1e-2, measure_every=5),
        dict(k=4, momentum=0.9, reset_optimizer=True),
        dict(trainer="plain", momentum=0.9),
        dict(trainer="gauss_newton", lr=0.5, damping=0.1, solver="cg", probe_size=0),
        dict(solve_to_convergence=True, k=8, convergence_patience=3, batch_size=0),
        dict(schedule="geometric", k=2),
    ],
)
def test_save_and_restore_continues_with_the_records_of_an_unbroken_run(overrides, tmp_path):
    cfg = tiny_config(eval_every=5, **overrides)
    unbroken = list(Trial(cfg).records())
    _, _, resumed = interrupted_run(cfg, 10, tmp_path)
    assert [r["step"] for r in resumed] == [r["step"] for r in unbroken]
    for a, b in zip(resumed, unbroken, strict=True):
        for key, value in b.items():
            if key == "elapsed_s":
                continue
            if isinstance(value, float) and math.isnan(value):
                assert math.isnan(a[key]), key
            else:
                assert a[key] == value, (key, a["step"])


def test_loading_a_state_leaves_the_callers_state_untouched():
    """θ_s is updated in place at a feature update: a state, once loaded, must not follow it."""
    cfg = tiny_config(k=2, total_steps=12, eval_every=4)
    trial = Trial(cfg)
    records = trial.records()
    next(records), next(records)  # step 4
    state = trial.state_dict()
    kept = {name: t.clone() for name, t in state["theta_s"].items()}
    restored = Trial(cfg)
    restored.load_state_dict(state)
    list(restored.records())
    assert restored.feature_updates == 5
    for name, t in state["theta_s"].items():
        assert torch.equal(t, kept[name]), name


# ---- solve_to_convergence ----------------------------------------------------------------
def _one_step_least_squares(n: int = 64, d: int = 8, c: int = 4) -> Data:
    """A task whose linear model converges at a known step: [X, 1] has orthogonal columns of
    squared norm n, so for the mean MSE ½‖Wx + b − t‖² the Hessian is I and one full-batch GD
    step with lr=1 lands exactly on the least-squares minimum; the loss is constant after it."""
    g = torch.Generator().manual_seed(0)
    basis = torch.cat([torch.ones(n, 1), torch.randn(n, d, generator=g)], 1).double()
    q, _ = torch.linalg.qr(basis)
    x = q[:, 1:] * n**0.5
    y = torch.randint(0, c, (n,), generator=g)
    return Data(x, y, x[:8], y[:8], c, None, x[:0], y[:0])


def _phase_end_by_the_rule(losses: list[float], patience: int, rtol: float, atol: float) -> int:
    """The documented rule applied to a known batch-loss sequence: the step at which an EMA
    (decay 0.9) of the batch loss has gone `patience` steps without improving on its best by
    max(rtol·|best|, atol)."""
    ema, best, stale = math.nan, math.nan, 0
    for step, loss in enumerate(losses, start=1):
        ema = loss if math.isnan(ema) else 0.9 * ema + 0.1 * loss
        if math.isnan(best):
            best = ema
        elif ema < best - max(rtol * abs(best), atol):
            best, stale = ema, 0
        else:
            stale += 1
        if stale >= patience:
            return step
    raise AssertionError("never converged")


def test_solve_to_convergence_ends_the_phase_where_the_linear_model_has_converged():
    data = _one_step_least_squares()
    patience, rtol, atol = 10, 1e-3, 1e-4
    cfg = dict(
        trainer="linearised", k="inf", solve_to_convergence=True, depth=0, loss="mse", lr=1.0,
        batch_size=0, total_steps=400, eval_every=400, probe_size=0, val_size=0, dtype="float64",
        convergence_patience=patience, convergence_rtol=rtol, convergence_atol=atol,
    )  # fmt: skip
    trial = Trial(cfg, data=data)
    x, y = trial.data.x_train, trial.data.y_train
    initial = float(loss_fn("mse", trial.model(x), y).detach())
    trial.advance()  # the one step that solves the linear model
    minimum = float(loss_fn("mse", trial.model(x), y).detach())
    assert minimum < initial
    while not trial.pending_move:
        trial.advance()
    end = trial.step
    # batch losses: the initial one at step 1, the minimum at every later step
    expected = _phase_end_by_the_rule([initial] + [minimum] * 399, patience, rtol, atol)
    assert end == expected
    # a converged phase, not a patience-length one: the EMA has to settle first
    assert patience < end <= 1 + 10 * patience


def test_solve_to_convergence_phases_run_past_a_smaller_cap_so_caps_differ():
    cfg = tiny_config(
        solve_to_convergence=True, batch_size=0, total_steps=120, eval_every=40, lr=0.02,
        convergence_patience=5, probe_size=0,
    )  # fmt: skip

    def first_phase(k) -> tuple[int, list[dict]]:
        trial = Trial({**cfg, "k": k})
        while not trial.pending_move and trial.step < 120:
            trial.advance()
        return trial.step, list(Trial({**cfg, "k": k}).records())

    end_uncapped, recs_uncapped = first_phase("inf")
    end_capped, recs_capped = first_phase(30)
    assert end_uncapped > 30  # still improving at the smaller cap, so it runs on
    assert end_capped == 30  # the cap ends the phase
    assert recs_uncapped[-1]["train_loss"] != recs_capped[-1]["train_loss"]


def _nan_as_none(record: dict) -> dict:
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in record.items()}
