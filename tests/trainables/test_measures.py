"""Feature-learning measures against direct constructions on a tiny network."""

from __future__ import annotations

import math

import pytest
import torch

from tests.oracles import dense_jacobian, flat_params, tiny_config
from trainables import Trial
from trainables.measures import centred_alignment, empirical_ntk, kernel_distance, relative_change


def test_trace_and_projected_kernels_match_materialised_jacobian():
    trial = Trial(tiny_config(probe_size=6))
    x = trial.x_probe
    J = dense_jacobian(trial.model, flat_params(trial.model), x)  # (n·c) × P, rows ordered (i, a)
    n, c = x.shape[0], trial.data.num_classes
    J_NxCxP = J.view(n, c, -1)
    K_trace = sum(J_NxCxP[:, a] @ J_NxCxP[:, a].T for a in range(c))
    params = dict(trial.model.named_parameters())
    torch.testing.assert_close(
        empirical_ntk(trial.model, params, x, "trace", trial.v_probe), K_trace
    )
    Jv = torch.einsum("c,ncp->np", trial.v_probe, J_NxCxP)
    torch.testing.assert_close(
        empirical_ntk(trial.model, params, x, "projected", trial.v_probe), Jv @ Jv.T
    )


def test_kernel_distance_and_alignment_match_their_definitions():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(5, 5, dtype=torch.float64, generator=g)
    K1, K2 = A @ A.T, (A + 0.3 * torch.randn(5, 5, dtype=torch.float64, generator=g)) @ A.T
    expected = 1 - torch.trace(K1.T @ K2) / (
        torch.linalg.matrix_norm(K1) * torch.linalg.matrix_norm(K2)
    )
    assert kernel_distance(K1, K2) == pytest.approx(float(expected), rel=1e-12)
    assert kernel_distance(K1, K1) == pytest.approx(0.0, abs=1e-15)
    assert kernel_distance(K1, 7 * K1) == pytest.approx(0.0, abs=1e-15)  # scale-invariant

    Y = torch.nn.functional.one_hot(torch.tensor([0, 1, 1, 2, 0]), 3).double()
    H = torch.eye(5, dtype=torch.float64) - torch.ones(5, 5, dtype=torch.float64) / 5
    Kc, T = H @ K1 @ H, H @ Y @ Y.T @ H
    expected_align = (Kc * T).sum() / (torch.linalg.matrix_norm(Kc) * torch.linalg.matrix_norm(T))
    assert centred_alignment(K1, Y) == pytest.approx(float(expected_align), rel=1e-12)
    assert centred_alignment(Y @ Y.T, Y) == pytest.approx(1.0, rel=1e-12)  # the ideal kernel


def test_relative_change():
    a = {"w": torch.tensor([3.0, 4.0])}
    b = {"w": torch.tensor([0.0, 0.0 + 1.0])}
    assert relative_change(a, b) == pytest.approx(math.sqrt(9 + 9) / 1.0)


def test_measures_in_records_follow_the_linearisation_point():
    cfg = tiny_config(k=10, total_steps=30, eval_every=5, measure_every=5, ntk="trace", lr=0.3)
    trial = Trial(cfg)
    records = list(trial.records())
    for rec in records:
        assert set(rec) >= {"kernel_distance_init", "kernel_alignment", "param_change"}
    by_step = {r["step"]: r for r in records}
    # within a phase the kernel of the trained model, K(θ_s), does not move
    for step in (5, 10):  # the first linear model is trained through step 10
        assert by_step[step]["kernel_distance_init"] == 0.0
        assert by_step[step]["kernel_distance_prev"] == 0.0
    assert by_step[15]["kernel_distance_init"] > 0  # θ_s moved before step 11
    assert by_step[20]["kernel_distance_prev"] == 0.0
    assert by_step[25]["kernel_velocity"] == pytest.approx(by_step[25]["kernel_distance_prev"] / 5)
    assert by_step[25]["kernel_velocity"] > 0
    assert by_step[30]["param_change"] > by_step[5]["param_change"] > 0

    # the logged value against a kernel built from the final θ_s with a materialised Jacobian
    theta0 = torch.cat([t.reshape(-1) for t in trial.theta_0.values()])
    theta_s = torch.cat([t.reshape(-1) for t in trial.theta_s.values()])
    n, c = trial.x_probe.shape[0], trial.data.num_classes

    def trace_ntk(theta):
        J = dense_jacobian(trial.model, theta, trial.x_probe).view(n, c, -1)
        return torch.einsum("ncp,mcp->nm", J, J)

    K0, Ks = trace_ntk(theta0), trace_ntk(theta_s)
    expected = 1 - (K0 * Ks).sum() / (K0.norm() * Ks.norm())
    assert by_step[30]["kernel_distance_init"] == pytest.approx(float(expected), rel=1e-8)
    assert by_step[30]["kernel_alignment"] == pytest.approx(
        centred_alignment(Ks, trial.Y_probe), rel=1e-8
    )
    expected_change = (flat_params(trial.model) - theta0).norm() / theta0.norm()
    assert by_step[30]["param_change"] == pytest.approx(float(expected_change), rel=1e-10)


def test_k_inf_has_no_kernel_change_and_measures_off_give_nan():
    recs = list(Trial(tiny_config(k="inf", ntk="trace")).records())
    assert all(r["kernel_distance_init"] == 0.0 for r in recs)
    off = list(Trial(tiny_config(probe_size=0)).records())
    assert all(math.isnan(r["kernel_distance_init"]) for r in off)
