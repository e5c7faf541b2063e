"""The fast code paths against the general ones they replace, and both against dense oracles."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.oracles import dense_jacobian, dense_output_hessian, flat_params, tiny_config
from trainables import Trial, TrialConfig
from trainables import jacobian as jac
from trainables import linearise as lin
from trainables.gauss_newton import conjugate_gradient, gauss_newton_direction
from trainables.gn_cost import SolverCosts, choose_solver, predicted_cg_iterations
from trainables.measures import empirical_ntk
from trainables.models import build_model

MLP_CASES = [
    dict(model="mlp", depth=depth, activation=act, norm=norm)
    for depth in (0, 2)
    for act in ("relu", "tanh", "gelu")
    for norm in ("none", "layer", "group")
    if depth or (act, norm) == ("relu", "none")
]
CNN_CASES = [
    dict(model="cnn", activation=act, norm=norm)
    for act, norm in (("relu", "none"), ("gelu", "group"), ("tanh", "layer"))
]


def _setup(case: dict, n: int = 5, seed: int = 0):
    """A float64 model, a batch, θ_s and a tangent δ with the scale of a few SGD steps."""
    size = {"width": 16} if case["model"] == "mlp" else {"channels": 2}
    cfg = TrialConfig.from_mapping({**size, "dtype": "float64", "dataset": "digits", **case})
    shape = (1, 8, 8) if case["model"] == "cnn" else (7,)
    model = build_model(cfg, shape, 4)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, dtype=torch.float64, generator=g)
    params = {k: v.detach() for k, v in model.named_parameters()}
    delta = {k: 0.1 * torch.randn(v.shape, dtype=v.dtype, generator=g) for k, v in params.items()}
    return model, x, params, delta


def _dual_only(model: nn.Module):
    """Force the general dual-tensor path for this model."""
    lin._chains[model] = (None, None)


@pytest.mark.parametrize(
    "case", MLP_CASES + CNN_CASES, ids=lambda c: "-".join(map(str, c.values()))
)
def test_layerwise_tangent_matches_dual_tensors_and_dense_jacobian(case):
    model, x, params, delta = _setup(case)
    assert lin._chain(model, params) is not None  # MLP and CNN take the layer-wise path
    primal, tangent = lin.linearised_forward(model, params, delta, x)

    theta_P = torch.cat([p.reshape(-1) for p in params.values()])
    J = dense_jacobian(model, theta_P, x)
    expected = (J @ torch.cat([d.reshape(-1) for d in delta.values()])).view_as(tangent)
    torch.testing.assert_close(tangent, expected, rtol=1e-10, atol=1e-12)

    _dual_only(model)
    primal_d, tangent_d = lin.linearised_forward(model, params, delta, x)
    torch.testing.assert_close(primal, primal_d, rtol=0, atol=0)  # the very same forward ops
    torch.testing.assert_close(tangent, tangent_d, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    "case", MLP_CASES[:3] + CNN_CASES, ids=lambda c: "-".join(map(str, c.values()))
)
@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
@pytest.mark.parametrize("at_lin_point", [False, True])
def test_layerwise_gradient_matches_dual_tensors(case, loss, at_lin_point):
    model, x, params, delta = _setup(case, n=6, seed=1)
    y = torch.arange(6) % 4
    delta = None if at_lin_point else delta
    grads, value, f_lin = lin.linearised_grad(model, params, delta, x, y, loss)
    _dual_only(model)
    grads_d, value_d, f_lin_d = lin.linearised_grad(model, params, delta, x, y, loss)
    torch.testing.assert_close(f_lin, f_lin_d, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(value, value_d, rtol=1e-12, atol=0)
    for g, g_d in zip(grads, grads_d, strict=True):
        torch.testing.assert_close(g, g_d, rtol=1e-10, atol=1e-13)


def test_models_that_are_not_known_chains_take_the_dual_path():
    class Residual(nn.Module):  # forward is not its chain: must not be treated as one
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(3, 3), nn.Tanh())

        def forward(self, x):
            return x + self.net(x)

    model = Residual().double()
    params = {k: v.detach() for k, v in model.named_parameters()}
    assert lin._chain(model, params) is None
    x = torch.randn(4, 3, dtype=torch.float64)
    delta = {k: torch.randn_like(v) for k, v in params.items()}
    _, tangent = lin.linearised_forward(model, params, delta, x)
    theta_P = torch.cat([p.reshape(-1) for p in params.values()])
    J = dense_jacobian(model, theta_P, x)
    expected = (J @ torch.cat([d.reshape(-1) for d in delta.values()])).view_as(tangent)
    torch.testing.assert_close(tangent, expected)

    seq = nn.Sequential(nn.Linear(3, 3), nn.Softplus()).double()  # an unknown layer
    assert lin._chain(seq, {k: v.detach() for k, v in seq.named_parameters()}) is None


def test_cnn_k1_follows_plain_sgd_step_for_step():
    """K=1 takes the layer-wise path's gradient at θ = θ_s: bit for bit plain SGD, on a CNN too."""
    cfg = tiny_config(
        dataset="digits", model="cnn", channels=4, n_train=64, n_test=32, batch_size=16,
        probe_size=0, momentum=0.9,
    )  # fmt: skip
    plain, lin1 = (
        Trial({**cfg, "trainer": "plain"}),
        Trial({**cfg, "trainer": "linearised", "k": 1}),
    )
    for _ in range(8):
        plain.advance()
        lin1.advance()
        torch.testing.assert_close(
            flat_params(lin1.model), flat_params(plain.model), rtol=0, atol=0
        )
    assert lin1.feature_updates == 7


# ---- Gauss-Newton and kernels: the structured and reuse paths ------------------------------
def _flat(params: dict) -> torch.Tensor:
    return torch.cat([p.reshape(-1) for p in params.values()])


@pytest.mark.parametrize(
    "case", MLP_CASES + CNN_CASES[:1], ids=lambda c: "-".join(map(str, c.values()))
)
def test_output_kernel_and_transpose_match_dense_jacobian(case):
    model, x, params, _ = _setup(case, n=4)
    factored = jac.factor_chain(model, params) is not None
    assert factored == (case.get("norm") == "none")  # norms take the vmap path
    K, out, jt = jac.output_kernel(model, params, x)
    J = dense_jacobian(model, _flat(params), x)
    torch.testing.assert_close(K, J @ J.T, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out, model(x), rtol=0, atol=1e-14)
    u = torch.randn(out.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(jt(u), J.T @ u.reshape(-1), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "case", MLP_CASES[1:4] + CNN_CASES, ids=lambda c: "-".join(map(str, c.values()))
)
def test_chain_linearisation_products_match_dense_jacobian(case):
    model, x, params, delta = _setup(case, n=4)
    out, jvp_fn, vjp_fn = lin.chain_linearisation(model, params, x)
    J = dense_jacobian(model, _flat(params), x)
    torch.testing.assert_close(out, model(x), rtol=0, atol=0)
    for _ in range(2):  # products can be repeated on the one forward
        torch.testing.assert_close(
            jvp_fn(delta).reshape(-1), J @ _flat(delta), rtol=1e-10, atol=1e-12
        )
        u = torch.randn(out.shape, dtype=torch.float64)
        torch.testing.assert_close(_flat(vjp_fn(u)), J.T @ u.reshape(-1), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "case", [MLP_CASES[4], CNN_CASES[1]], ids=["mlp-layernorm", "cnn-groupnorm"]
)
@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
@pytest.mark.parametrize("solver", ["exact", "cg"])
def test_gauss_newton_on_models_without_the_structured_kernel(case, loss, solver):
    """MLPs with norms and CNNs materialise J (exact) and use the generic products (cg)."""
    model, x, params, _ = _setup(case, n=5)
    y = torch.arange(5) % 4
    J = dense_jacobian(model, _flat(params), x)
    out = model(x).detach()
    H = dense_output_hessian(loss, out)
    grad = J.T @ lin.output_grad(loss, out, y).reshape(-1)
    G = J.T @ H @ J
    expected = torch.linalg.solve(G + 0.1 * torch.eye(G.shape[0], dtype=G.dtype), grad)
    d, _, info = gauss_newton_direction(
        model, params, x, y, loss, 0.1, solver=solver, cg_tol=1e-12, cg_max_iter=5000
    )
    assert info.solver == solver
    torch.testing.assert_close(_flat(d), expected, rtol=1e-7, atol=1e-9 * expected.norm().item())


@pytest.mark.parametrize(
    "case", [MLP_CASES[1], MLP_CASES[4], *CNN_CASES], ids=lambda c: "-".join(map(str, c.values()))
)
def test_factored_jacobians_and_probe_kernels_match_dense_jacobian(case):
    model, x, params, _ = _setup(case, n=6)
    J = dense_jacobian(model, _flat(params), x).view(6, 4, -1)
    v = torch.tensor([0.5, -0.5, 0.5, 0.5], dtype=torch.float64)
    Jv = torch.einsum("c,ncp->np", v, J)
    torch.testing.assert_close(jac.jacobian(model, params, x), J, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(
        jac.projected_jacobian(model, params, x, v), Jv, rtol=1e-10, atol=1e-12
    )
    K_trace = torch.einsum("ncp,mcp->nm", J, J)
    torch.testing.assert_close(empirical_ntk(model, params, x, "trace", v), K_trace)
    torch.testing.assert_close(empirical_ntk(model, params, x, "projected", v), Jv @ Jv.T)


def test_auto_rules_with_a_cost_model():
    costs = SolverCosts(exact_s=1.0, iteration_s=0.01, jacobian_bytes=0)
    ask = dict(costs=costs, cg_max_iter=500)
    assert choose_solver("auto", 64, 10, 10**9, 4096, **ask) == "probe"  # J never materialised
    assert choose_solver("auto", 64, 10, 10**6, 4096, damping=1e3, rayleigh=1.0, **ask) == "cg"
    assert choose_solver("auto", 64, 10, 10**6, 4096, damping=1e-6, rayleigh=1.0, **ask) == "exact"
    cheap = SolverCosts(exact_s=0.03, iteration_s=0.01, jacobian_bytes=0)  # < CG's best case
    assert choose_solver("auto", 64, 10, 10**6, 4096, costs=cheap) == "exact"
    dear = SolverCosts(exact_s=100.0, iteration_s=0.01, jacobian_bytes=0)  # > CG's worst case
    assert choose_solver("auto", 64, 10, 10**6, 4096, costs=dear) == "cg"
    big_j = SolverCosts(exact_s=1.0, iteration_s=0.01, jacobian_bytes=2**31)
    assert choose_solver("auto", 64, 10, 10**6, 4096, costs=big_j) == "cg"
    assert choose_solver("auto", 500, 10, 10, 4096, costs=cheap) == "cg"  # n·c > exact_max_dim
    assert predicted_cg_iterations(1.0, 1.0, 1e-6, 500) == pytest.approx(12.0)
    assert predicted_cg_iterations(1e-9, 1.0, 1e-6, 500) == 500


@pytest.mark.parametrize("damping", [1e-4, 1e3])
def test_auto_returns_the_direction_of_the_solver_it_picked(damping):
    model, x, params, _ = _setup(MLP_CASES[1], n=8)
    y = torch.arange(8) % 4
    args = (model, params, x, y, "cross_entropy", damping)
    d_auto, loss_auto, info = gauss_newton_direction(*args, solver="auto")
    d_ref, loss_ref, _ = gauss_newton_direction(*args, solver=info.solver)
    assert info.solver in ("exact", "cg")
    torch.testing.assert_close(_flat(d_auto), _flat(d_ref), rtol=1e-12, atol=0)
    assert loss_auto == loss_ref


def test_conjugate_gradient_reuses_a_given_first_product():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(20, 20, dtype=torch.float64, generator=g)
    A = A @ A.T + torch.eye(20, dtype=torch.float64)
    b = torch.randn(20, dtype=torch.float64, generator=g)
    calls = []

    def matvec(v):
        calls.append(1)
        return A @ v

    x1, it1, _ = conjugate_gradient(matvec, b, 1e-10, 100)
    n_plain = len(calls)
    x2, it2, _ = conjugate_gradient(matvec, b, 1e-10, 100, first_Ap=A @ b)
    assert it1 == it2 and len(calls) - n_plain == n_plain - 1
    torch.testing.assert_close(x1, x2, rtol=0, atol=0)
