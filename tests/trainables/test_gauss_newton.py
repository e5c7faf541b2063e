"""Damped Gauss-Newton against a materialised JᵀHJ and dense solves, in float64."""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import functional_call, jvp, vjp

from tests.oracles import (
    dense_jacobian,
    dense_loss_grad,
    dense_output_hessian,
    flat_params,
    interrupted_run,
    tiny_config,
)
from trainables import Trial
from trainables.gauss_newton import conjugate_gradient, gauss_newton_direction, gn_step_size
from trainables.gn_cost import (
    _count_flops_by_layer,
    _count_flops_traced,
    _flops_per_example,
    choose_solver,
)
from trainables.jacobian import flatten, unflatten
from trainables.linearise import output_hessian, output_hessian_vp
from trainables.models import CNN, MLP

LOSSES = ("cross_entropy", "mse")


def _problem(loss: str, n: int = 10, seed: int = 0, **model):
    trial = Trial(tiny_config(loss=loss, seed=seed, width=6, **model))
    x, y = trial.data.x_train[:n], trial.data.y_train[:n]
    theta = flat_params(trial.model)
    J = dense_jacobian(trial.model, theta, x)
    out = functional_call(trial.model, dict(trial.model.named_parameters()), (x,)).detach()
    H = dense_output_hessian(loss, out)
    G = J.T @ H @ J
    grad = dense_loss_grad(trial.model, theta, x, y, loss)
    return trial, x, y, G, grad


@pytest.mark.parametrize("loss", LOSSES)
def test_output_hessian_closed_form_matches_autograd_hessian(loss):
    out = torch.randn(5, 4, dtype=torch.float64)
    torch.testing.assert_close(output_hessian(loss, out), dense_output_hessian(loss, out))
    v = torch.randn(5, 4, dtype=torch.float64)
    torch.testing.assert_close(
        output_hessian_vp(loss, out, v).reshape(-1), dense_output_hessian(loss, out) @ v.reshape(-1)
    )


@pytest.mark.parametrize("loss", LOSSES)
def test_ggn_vector_product_matches_materialised_JtHJ(loss):
    trial, x, _, G, _ = _problem(loss)
    params = {k: v.detach() for k, v in trial.model.named_parameters()}

    def f(p):
        return functional_call(trial.model, p, (x,))

    out, vjp_fn = vjp(f, params)
    v = torch.randn(G.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    _, jv = jvp(f, (params,), (unflatten(v, params),))  # the same three pieces the CG solver uses
    gv = flatten(vjp_fn(output_hessian_vp(loss, out, jv))[0])
    torch.testing.assert_close(gv, G @ v, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("damping", [1e-6, 1e-4, 1e-2, 1.0, 1e2, 1e3])
def test_exact_step_matches_dense_damped_solve(loss, damping):
    trial, x, y, G, grad = _problem(loss)
    expected = torch.linalg.solve(G + damping * torch.eye(G.shape[0], dtype=G.dtype), grad)
    d, _, info = gauss_newton_direction(
        trial.model, dict(trial.model.named_parameters()), x, y, loss, damping, solver="exact"
    )
    assert info.solver == "exact"
    torch.testing.assert_close(flatten(d), expected, rtol=1e-6, atol=1e-9 * expected.norm().item())


@pytest.mark.parametrize("solver", ["exact", "cg"])
def test_cnn_steps_in_channels_last_match_dense_damped_solve(solver):
    """The CNN runs channels-last on the CPU; its Jacobian from unfolded patches and its
    products must not notice."""
    trial, x, y, G, grad = _problem("cross_entropy", n=4, model="cnn", dataset="digits", channels=2)
    assert trial.data.x_train.is_contiguous(memory_format=torch.channels_last)
    damping = 1e-2
    expected = torch.linalg.solve(G + damping * torch.eye(G.shape[0], dtype=G.dtype), grad)
    d, _, info = gauss_newton_direction(
        trial.model, trial.theta, x, y, "cross_entropy", damping, solver=solver, cg_tol=1e-10
    )
    assert info.solver == solver
    torch.testing.assert_close(flatten(d), expected, rtol=1e-6, atol=1e-9 * expected.norm().item())


@pytest.mark.parametrize("loss", LOSSES)
def test_exact_step_at_zero_damping_is_pseudo_inverse(loss):
    trial, x, y, G, grad = _problem(loss)
    expected = torch.linalg.pinv(G, hermitian=True, rtol=1e-10) @ grad
    d, _, _ = gauss_newton_direction(
        trial.model, dict(trial.model.named_parameters()), x, y, loss, 0.0, solver="exact"
    )
    torch.testing.assert_close(flatten(d), expected, rtol=1e-5, atol=1e-8 * expected.norm().item())


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("damping", [1e-2, 1.0, 1e2])
def test_cg_matches_exact_at_moderate_damping(loss, damping):
    trial, x, y, _, _ = _problem(loss)
    params = dict(trial.model.named_parameters())
    exact, _, _ = gauss_newton_direction(trial.model, params, x, y, loss, damping, solver="exact")
    cg, _, info = gauss_newton_direction(
        trial.model, params, x, y, loss, damping, solver="cg", cg_tol=1e-10, cg_max_iter=2000
    )
    assert info.solver == "cg" and info.residual <= 1e-10
    torch.testing.assert_close(
        flatten(cg), flatten(exact), rtol=1e-7, atol=1e-9 * flatten(exact).norm().item()
    )


def test_relative_damping_is_in_units_of_mean_diag_of_G():
    trial, x, y, G, grad = _problem("cross_entropy")
    params = dict(trial.model.named_parameters())
    lam = 0.3 * G.diagonal().mean().item()
    expected = torch.linalg.solve(G + lam * torch.eye(G.shape[0], dtype=G.dtype), grad)
    d, _, info = gauss_newton_direction(
        trial.model, params, x, y, "cross_entropy", 0.3, "relative", "exact"
    )
    assert info.damping == pytest.approx(lam, rel=1e-10)
    torch.testing.assert_close(flatten(d), expected, rtol=1e-8, atol=1e-12)
    _, _, info_cg = gauss_newton_direction(
        trial.model, params, x, y, "cross_entropy", 0.3, "relative", "cg"
    )
    assert info_cg.damping == pytest.approx(lam, rel=0.5)  # Hutchinson estimate of tr(G)/P


def test_conjugate_gradient_solves_spd_system_and_counts_iterations():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(30, 30, dtype=torch.float64, generator=g)
    A = A @ A.T + 0.1 * torch.eye(30, dtype=torch.float64)
    b = torch.randn(30, dtype=torch.float64, generator=g)
    x, iters, rel = conjugate_gradient(lambda v: A @ v, b, 1e-12, 1000)
    torch.testing.assert_close(x, torch.linalg.solve(A, b))
    assert 0 < iters <= 1000 and rel <= 1e-12
    _, capped, rel_capped = conjugate_gradient(lambda v: A @ v, b, 1e-12, 3)
    assert capped == 3 and rel_capped > 1e-12


def test_gauss_newton_trainer_takes_damped_steps():
    cfg = tiny_config(
        trainer="gauss_newton",
        lr=0.5,
        damping=0.1,
        solver="exact",
        total_steps=3,
        eval_every=1,
        probe_size=0,
    )
    trial = Trial(cfg)
    gen = trial.records()
    next(gen)
    from trainables import batch_indices

    for step in range(3):
        theta = flat_params(trial.model)
        idx = batch_indices(0, len(trial.data.y_train), 16, step)
        x, y = trial.data.x_train[idx], trial.data.y_train[idx]
        J = dense_jacobian(trial.model, theta, x)
        out = functional_call(trial.model, dict(trial.model.named_parameters()), (x,)).detach()
        G = J.T @ dense_output_hessian("cross_entropy", out) @ J
        grad = dense_loss_grad(trial.model, theta, x, y, "cross_entropy")
        expected = theta - 0.5 * torch.linalg.solve(
            G + 0.1 * torch.eye(len(theta), dtype=G.dtype), grad
        )
        rec = next(gen)
        assert (
            rec["step"] == step + 1 and rec["feature_updates"] == step
        )  # relinearised before each step but the first
        torch.testing.assert_close(flat_params(trial.model), expected, rtol=1e-8, atol=1e-10)


def test_auto_solver_picks_exact_for_small_systems_and_cg_for_large():
    assert choose_solver("auto", 10, 4, 1000, 4096) == "exact"
    assert choose_solver("auto", 1000, 10, 1000, 4096) == "cg"
    assert choose_solver("exact", 1000, 10, 1000, 4096) == "exact"


def test_auto_decides_with_a_remembered_rayleigh_quotient_and_reprobes(monkeypatch):
    """In the zone where auto must probe, a recent q decides instead; CG's start is then built
    only when CG runs, and a probe happens again every REPROBE_EVERY decisions."""
    import trainables.gauss_newton as gn

    costs = gn.SolverCosts(exact_s=1.0, iteration_s=0.01, jacobian_bytes=0)  # probe zone
    monkeypatch.setattr(gn, "solver_costs", lambda *a, **k: costs)
    starts = []
    real_start = gn._CGStart

    def counting_start(*args, **kwargs):
        starts.append(1)
        return real_start(*args, **kwargs)

    monkeypatch.setattr(gn, "_CGStart", counting_start)
    trial, x, y, _, _ = _problem("cross_entropy")
    lam = 1e-3

    def solve(memory):
        return gauss_newton_direction(trial.model, trial.theta, x, y, "cross_entropy", lam,
                                      memory=memory)[2].solver  # fmt: skip

    solve(None)
    assert len(starts) == 1  # no memory: a probe
    slow_cg = gn.SolverMemory(rayleigh=1e6 * lam)  # CG would need hundreds of iterations
    assert [solve(slow_cg) for _ in range(3)] == ["exact"] * 3 and len(starts) == 1
    fast_cg = gn.SolverMemory(rayleigh=lam)  # a handful of iterations
    assert solve(fast_cg) == "cg" and len(starts) == 2  # built once, for CG itself
    true_q = fast_cg.rayleigh
    assert true_q != lam and fast_cg.since_probe == 0  # CG's start refreshed the memory

    stale = gn.SolverMemory(rayleigh=1e6 * lam, since_probe=gn.SolverMemory.REPROBE_EVERY)
    before = len(starts)
    solve(stale)
    assert len(starts) == before + 1 and stale.rayleigh == pytest.approx(true_q)
    assert stale.since_probe == 0


def test_a_restored_gn_trial_remembers_what_auto_learnt(monkeypatch, tmp_path):
    import trainables.gauss_newton as gn

    costs = gn.SolverCosts(exact_s=1.0, iteration_s=0.01, jacobian_bytes=0)  # probe zone
    monkeypatch.setattr(gn, "solver_costs", lambda *a, **k: costs)
    cfg = tiny_config(trainer="gauss_newton", solver="auto", lr=0.1, damping=1e-4,
                      total_steps=30, eval_every=5, probe_size=0)  # fmt: skip
    unbroken = Trial(cfg)
    expected = [r for r in unbroken.records()]
    trial, restored, resumed = interrupted_run(cfg, 10, tmp_path)
    assert trial.solver_memory.rayleigh is not None and trial.solver_memory.since_probe == 9
    assert restored.solver_memory == unbroken.solver_memory  # probed at the same steps
    for a, b in zip(resumed, expected, strict=True):
        a.pop("elapsed_s"), b.pop("elapsed_s")
        assert _nan_as_none(a) == _nan_as_none(b)  # a measure off is NaN in both, and NaN != NaN


def _nan_as_none(record: dict) -> dict:
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in record.items()}


@pytest.mark.parametrize(
    ("make", "shape"),
    [
        (lambda: MLP(64, 10, 12, 0, "relu", "none"), (64,)),
        (lambda: MLP(20, 3, 17, 3, "gelu", "layer"), (4, 5)),
        (lambda: CNN(1, 10, 3, "relu", "none"), (1, 8, 8)),
        (lambda: CNN(3, 10, 4, "tanh", "group"), (3, 32, 32)),
        (lambda: CNN(1, 10, 2, "relu", "group"), (1, 28, 28)),
    ],
)
def test_solver_cost_flops_by_layer_equal_torch_flop_counter(make, shape):
    """The cost model's FLOPs come from layer shapes (FlopCounterMode imports torch._dynamo);
    they must be FlopCounterMode's counts exactly, for every model the trainers build."""
    model = make().double()
    params = dict(model.named_parameters())
    x = torch.randn(1, *shape, dtype=torch.float64)
    by_layer = _count_flops_by_layer(model, params, x)
    assert by_layer is not None
    assert by_layer == _count_flops_traced(model, params, x)
    assert by_layer[1 if isinstance(model, CNN) else 0] > 0


def test_solver_cost_flops_of_an_unknown_module_are_traced():
    class Scaled(torch.nn.Linear):  # its own forward: hooks could not know its matmuls
        def forward(self, x):
            return 2 * super().forward(x) @ torch.eye(self.out_features, dtype=x.dtype)

    net = torch.nn.Sequential(torch.nn.Flatten(), Scaled(6, 5))
    params = dict(net.named_parameters())
    x = torch.randn(3, 6)
    assert _count_flops_by_layer(net, params, x[:1]) is None
    assert _flops_per_example(net, params, x) == (2.0 * 6 * 5 + 2.0 * 5 * 5, 0.0)


@pytest.mark.parametrize("damping_mode", ["absolute", "relative"])
def test_damped_lr_units_step_by_lr_times_one_plus_lambda(damping_mode):
    """lr_units=damped: θ ← θ − lr·(1 + λ)(G + λI)⁻¹∇L with λ the step's absolute damping (for
    relative damping, λ = damping·tr(G)/P of the step's batch), against a dense float64 solve."""
    lr, damping = 0.3, 0.7
    cfg = tiny_config(
        trainer="gauss_newton", lr=lr, damping=damping, damping_mode=damping_mode,
        lr_units="damped", solver="exact", total_steps=2, eval_every=1, probe_size=0,
    )  # fmt: skip
    trial = Trial(cfg)
    gen = trial.records()
    next(gen)
    from trainables import batch_indices

    for step in range(2):
        theta = flat_params(trial.model)
        idx = batch_indices(0, len(trial.data.y_train), 16, step)
        x, y = trial.data.x_train[idx], trial.data.y_train[idx]
        J = dense_jacobian(trial.model, theta, x)
        out = functional_call(trial.model, dict(trial.model.named_parameters()), (x,)).detach()
        G = J.T @ dense_output_hessian("cross_entropy", out) @ J
        grad = dense_loss_grad(trial.model, theta, x, y, "cross_entropy")
        lam = damping * (G.diagonal().mean().item() if damping_mode == "relative" else 1.0)
        eye = torch.eye(len(theta), dtype=G.dtype)
        expected = theta - lr * (1 + lam) * torch.linalg.solve(G + lam * eye, grad)
        next(gen)
        torch.testing.assert_close(flat_params(trial.model), expected, rtol=1e-8, atol=1e-10)


def test_damped_lr_units_reach_the_gn_step_and_the_sgd_step_at_the_two_ends():
    """The reason for the unit: as λ → 0 the damped step is lr·G⁺∇L (λ = 0 exactly: the
    pseudo-inverse), as λ → ∞ it is lr·∇L, the SGD step of the same lr."""
    trial, x, y, G, grad = _problem("mse")
    params = dict(trial.model.named_parameters())
    lr = 0.2
    for lam, expected in ((0.0, torch.linalg.pinv(G, hermitian=True) @ grad), (1e9, grad)):
        d, _, info = gauss_newton_direction(trial.model, params, x, y, "mse", lam, solver="exact")
        step = gn_step_size(lr, info.damping, "damped") * flatten(d)
        torch.testing.assert_close(step, lr * expected, rtol=1e-6, atol=1e-9)
    assert gn_step_size(lr, 5.0, "absolute") == lr
    with pytest.raises(ValueError, match="lr_units"):
        gn_step_size(lr, 5.0, "bogus")
