"""Stability measures (trainables/stability.py) against independent constructions, in float64:
materialised Gauss-Newton matrices, the closed form of linear least squares and its edge of
stability, and the Taylor order of the gap at a feature update; then the loop's cadence, the
outcome rule, and a restore that continues with the same rows."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn
from torch.func import functional_call, jacrev

from tests.oracles import dense_output_hessian, interrupted_run, tiny_config
from trainables import Trial
from trainables.keys import PHASE_KEYS, STABILITY_KEYS
from trainables.loop import diverged, peak_loss_ratio
from trainables.stability import (
    SHARPNESS_RTOL,
    lin_gap,
    lr_sharpness,
    measure_due,
    sharpness,
    stability_batch,
)
from trainables.state import STATE_VERSION


def _gauss_newton_matrix(model: nn.Module, params: dict, x: torch.Tensor, loss: str):
    """G = JᵀHJ with J by jacrev and H the autograd Hessian of the loss in the outputs."""
    params = {k: v.detach() for k, v in params.items()}
    jac = jacrev(lambda p: functional_call(model, p, (x,)))(params)
    out = functional_call(model, params, (x,))
    J = torch.cat([jac[k].reshape(out.numel(), -1) for k in params], 1)
    H = dense_output_hessian(loss, out)
    return J.T @ H @ J


class _Skip(nn.Module):
    """Not a chain of layers: sharpness takes the torch.func path for it."""

    def __init__(self, d: int, c: int):
        super().__init__()
        self.a, self.b, self.skip = nn.Linear(d, 6), nn.Linear(6, c), nn.Linear(d, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.tanh(self.a(x))) + self.skip(x)


# ---- sharpness -------------------------------------------------------------------------------
@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
@pytest.mark.parametrize("model", ["mlp", "not_a_chain"])
def test_sharpness_is_the_top_eigenvalue_of_the_materialised_gauss_newton_matrix(loss, model):
    trial = Trial(tiny_config(loss=loss, width=8))
    x, y = trial.data.x_train[:12], trial.data.y_train[:12]
    net = trial.model
    if model == "not_a_chain":
        torch.manual_seed(0)
        net = _Skip(x.shape[1], trial.data.num_classes).double()
    params = dict(net.named_parameters())
    expected = float(torch.linalg.eigvalsh(_gauss_newton_matrix(net, params, x, loss))[-1])
    assert sharpness(net, params, x, y, loss, rtol=1e-10) == pytest.approx(expected, rel=1e-6)
    # the default tolerance bounds the error by SHARPNESS_RTOL (a residual bound)
    assert sharpness(net, params, x, y, loss) == pytest.approx(expected, rel=SHARPNESS_RTOL)


def test_sharpness_is_the_closed_form_on_linear_least_squares():
    """MSE is ½‖f − y‖² per example, averaged: for f = Wx + b, G = (X̃ᵀX̃/n) ⊗ I_c, X̃ = [X 1]."""
    trial = Trial(tiny_config(depth=0, loss="mse"))
    x, y = trial.data.x_train[:40], trial.data.y_train[:40]
    X1 = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    expected = float(torch.linalg.eigvalsh(X1.T @ X1 / len(x))[-1])
    got = sharpness(trial.model, trial.theta, x, y, "mse", rtol=1e-10)
    assert got == pytest.approx(expected, rel=1e-9)
    # ...and twice the loss is twice the curvature: the scaling is the loss's, not assumed
    assert expected != pytest.approx(2 * expected)


@pytest.mark.parametrize("momentum", [0.0, 0.5])
def test_lr_sharpness_2_is_the_edge_of_stability_of_gd_on_least_squares(momentum):
    """K=∞ on a linear model, full batch, MSE: exactly GD (heavy ball) on a quadratic whose
    Hessian is G. Just below lr_sharpness = 2 it converges, just above it blows up."""
    base = tiny_config(depth=0, loss="mse", batch_size=0, k="inf", momentum=momentum)
    lam = Trial(base).records().__next__()["sharpness"]
    runs = {}
    for edge in (1.9, 2.1):
        cfg = {**base, "lr": edge * (1 + momentum) / lam, "total_steps": 200, "eval_every": 50}
        runs[edge] = list(Trial({**cfg, "divergence_factor": 0}).records())
        assert runs[edge][0]["lr_sharpness"] == pytest.approx(edge, rel=1e-6)
    stable, unstable = runs[1.9], runs[2.1]
    assert stable[-1]["train_loss"] < stable[0]["train_loss"] and not stable[-1]["diverged"]
    assert unstable[-1]["train_loss"] > 1e6 * unstable[0]["train_loss"]
    # divergence_factor off: only the outcome rule flags it, at its final record
    assert [r["diverged"] for r in unstable] == [False] * (len(unstable) - 1) + [True]


def test_sharpness_leaves_the_model_and_every_rng_as_they_were_and_repeats_exactly():
    trial = Trial(tiny_config())
    x, y = trial.data.x_train[:16], trial.data.y_train[:16]
    before = {k: v.detach().clone() for k, v in trial.theta.items()}
    rng = torch.get_rng_state()
    first = sharpness(trial.model, trial.theta, x, y, "cross_entropy")
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(before[k], v) for k, v in trial.theta.items())
    assert all(p.grad is None for p in trial.theta.values())
    assert sharpness(trial.model, trial.theta, x, y, "cross_entropy") == first


def test_sharpness_of_a_diverged_network_is_nan():
    trial = Trial(tiny_config())
    theta = {k: torch.full_like(v, math.nan) for k, v in trial.theta.items()}
    x, y = trial.data.x_train[:8], trial.data.y_train[:8]
    assert math.isnan(sharpness(trial.model, theta, x, y, "cross_entropy"))


# ---- lr·sharpness ---------------------------------------------------------------------------
def test_lr_sharpness_has_its_edge_at_2_for_sgd_and_is_nan_for_preconditioned_steps():
    common = dict(lr=0.1, optimizer="sgd", momentum=0.0, trainer="linearised")
    assert lr_sharpness(30.0, **common) == pytest.approx(3.0)
    assert lr_sharpness(30.0, **{**common, "trainer": "plain"}) == pytest.approx(3.0)
    assert lr_sharpness(30.0, **{**common, "momentum": 0.5}) == pytest.approx(2.0)
    assert math.isnan(lr_sharpness(30.0, **{**common, "optimizer": "adam"}))
    assert math.isnan(lr_sharpness(30.0, **{**common, "trainer": "gauss_newton"}))


@pytest.mark.parametrize(
    "overrides",
    [
        dict(trainer="gauss_newton", damping=1e-2, lr=0.2),
        dict(trainer="plain", optimizer="adam", lr=1e-2),
        dict(trainer="linearised", optimizer="adam", lr=1e-2, k=4),
        dict(trainer="plain", momentum=0.9),
    ],
)
def test_records_carry_sharpness_for_every_trainer_and_lr_sharpness_for_sgd_only(overrides):
    cfg = tiny_config(**overrides)
    for record in Trial(cfg).records():
        assert math.isfinite(record["sharpness"]) and record["sharpness"] > 0
        if cfg.get("optimizer", "sgd") == "adam" or cfg["trainer"] == "gauss_newton":
            assert math.isnan(record["lr_sharpness"])
        else:
            momentum = cfg.get("momentum", 0.0)
            expected = cfg.get("lr", 0.05) * record["sharpness"] / (1 + momentum)
            assert record["lr_sharpness"] == pytest.approx(expected, rel=1e-12)


def test_lr_sharpness_max_is_the_largest_measure_since_the_previous_record():
    trial = Trial(tiny_config(k=2, lr=0.3, eval_every=10, measure_every=2))
    previous = 0
    for record in trial.records():
        rows = [r for r in trial.take_phase_rows() if r["step"] >= previous]
        assert record["lr_sharpness_max"] == max(r["lr_sharpness"] for r in rows)
        assert record["lr_sharpness"] == rows[-1]["lr_sharpness"]
        previous = record["step"] + 1


# ---- the gap at a feature update ----------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 3])
def test_lin_gap_is_zero_for_a_model_linear_in_its_parameters(k):
    """f_lin = f exactly in exact arithmetic; a network's gap on the same run is far larger."""
    cfg = tiny_config(k=k, lr=0.3, measure_every=1)
    linear, network = Trial({**cfg, "depth": 0}), Trial(cfg)
    list(linear.records()), list(network.records())
    rows, net_rows = linear.take_phase_rows()[1:], network.take_phase_rows()[1:]
    assert len(rows) == len(net_rows) == len(range(k, 30, k))  # every update, measured
    for row in rows:
        assert abs(row["lin_gap"]) <= 1e-13 * row["loss_after"]
    assert max(abs(r["lin_gap"]) / r["loss_after"] for r in net_rows) > 1e-6
    # and the function itself, off the point
    theta = {k: v.detach() + 0.1 for k, v in linear.theta.items()}
    x, y = linear.data.x_train[:16], linear.data.y_train[:16]
    assert lin_gap(linear.model, theta, linear.theta_s, x, y, "cross_entropy") == pytest.approx(
        0.0, abs=1e-13
    )


def test_lin_gap_at_k1_is_second_order_in_the_learning_rate():
    """One step of size lr from θ_s: f(θ) − f_lin(θ) = ½δᵀ∇²f δ + O(δ³) with δ = O(lr)."""
    gaps = []
    for lr in (0.02, 0.01, 0.005):
        trial = Trial(tiny_config(k=1, lr=lr, measure_every=1, total_steps=2, eval_every=2))
        list(trial.records())
        (first_update,) = [r for r in trial.take_phase_rows() if r["step"] == 1]
        assert first_update["lin_gap"] == pytest.approx(
            first_update["loss_after"] - first_update["loss_before"], rel=1e-12
        )
        gaps.append(first_update["lin_gap"])
    for big, small in itertools.pairwise(gaps):
        assert big / small == pytest.approx(4.0, rel=0.05)


# ---- the cadence and the stability batch ------------------------------------------------------
def test_measure_due_takes_the_first_point_of_each_window():
    assert measure_due(3, -1, 5)  # none yet
    assert not measure_due(4, 0, 5) and measure_due(5, 0, 5) and measure_due(8, 4, 5)
    assert not measure_due(9, 5, 5) and measure_due(10, 9, 5)


@pytest.mark.parametrize(
    ("overrides", "steps"),
    [
        (dict(k=7), [0, 7, 14, 21, 28]),  # phases ≥ the interval apart: every point
        (dict(k=4), [0, 8, 12, 16, 20, 28]),  # closer: the first point in each window of 5
        (dict(k=1), [0, 5, 10, 15, 20, 25]),  # every step relinearises; none after step T
        (dict(trainer="plain"), [0, 5, 10, 15, 20, 25]),
        (dict(trainer="gauss_newton", damping=1e-2), [0, 5, 10, 15, 20, 25]),
        (dict(k="inf"), [0]),  # only the initial linearisation point
        (dict(k=4, probe_size=0), []),  # measures off with the probe
    ],
)
def test_the_stability_cadence(overrides, steps):
    trial = Trial(tiny_config(measure_every=5, **overrides))
    records = list(trial.records())
    rows = trial.take_phase_rows()
    assert [r["step"] for r in rows] == steps
    assert [r["feature_updates"] for r in rows] == [min(s, 1) * (s // trial.cfg.k) for s in steps]
    if not steps:
        assert all(math.isnan(r[key]) for r in records for key in STABILITY_KEYS)


def test_a_record_carries_the_latest_measure_and_nan_before_the_first():
    trial = Trial(tiny_config(k=4, measure_every=5, eval_every=10))
    rows = []
    for record in trial.records():
        rows += trial.take_phase_rows()
        latest = rows[-1]
        assert record["sharpness"] == latest["sharpness"]
        assert _same(record["lin_gap"], latest["lin_gap"])
    assert math.isnan(rows[0]["lin_gap"]) and math.isnan(rows[0]["loss_before"])
    assert all(math.isfinite(r[key]) for r in rows[1:] for key in PHASE_KEYS)


def test_the_stability_batch_is_at_least_a_training_batch():
    data = Trial(tiny_config()).data
    n = len(data.y_train)
    assert len(stability_batch(data, 8, 16, 0)[1]) == 16
    assert len(stability_batch(data, 32, 16, 0)[1]) == 32
    assert stability_batch(data, 8, 0, 0)[0] is data.x_train  # full batch: all of them
    assert len(stability_batch(data, 8, 10 * n, 0)[1]) == n
    x0, x1 = stability_batch(data, 8, 16, 0)[0], stability_batch(data, 8, 16, 1)[0]
    assert torch.equal(x0, stability_batch(data, 8, 16, 0)[0]) and not torch.equal(x0, x1)


# ---- the outcome rule and the peak loss ----------------------------------------------------------
@pytest.mark.parametrize(
    ("loss", "final", "finite", "factor", "expected"),
    [
        (1.1, True, True, 100.0, True),  # ends above its initial loss: never a clean finish
        (0.9, True, True, 100.0, False),
        (1.1, False, True, 100.0, False),  # above it mid-run: a spike may recover
        (150.0, False, True, 100.0, True),  # past divergence_factor × initial
        (150.0, False, True, 0.0, False),  # that test off
        (1.1, True, True, 0.0, True),  # the final rule stays on
        (0.5, False, False, 100.0, True),  # a non-finite parameter
        (math.inf, False, True, 100.0, True),
        (math.nan, False, True, 0.0, True),
    ],
)
def test_the_outcome_rule_on_constructed_losses(loss, final, finite, factor, expected):
    got = diverged(loss, 1.0, finite=finite, final=final, factor=factor)
    assert got is expected


def test_peak_loss_ratio():
    assert peak_loss_ratio(3.0, 1.5) == 2.0
    assert peak_loss_ratio(math.inf, 1.5) == math.inf
    assert peak_loss_ratio(1.0, math.nan) == math.inf
    base = tiny_config(depth=0, loss="mse", batch_size=0, k="inf", divergence_factor=0)
    records = list(Trial({**base, "lr": 2.4, "total_steps": 40, "eval_every": 5}).records())
    losses = [r["train_loss"] for r in records]
    peaks = [max(losses[: i + 1]) / losses[0] for i in range(len(losses))]
    assert [r["peak_loss_ratio"] for r in records] == pytest.approx(peaks, rel=1e-15)
    assert peaks[-1] > 1 and records[0]["peak_loss_ratio"] == 1.0


def test_val_examples_counts_the_validation_split():
    with_val, without = Trial(tiny_config()), Trial(tiny_config(val_size=0))
    assert next(with_val.records())["val_examples"] == len(with_val.data.y_val) > 0
    assert next(without.records())["val_examples"] == 0


# ---- state ---------------------------------------------------------------------------------------
def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _records_and_rows(trial: Trial) -> tuple[list[dict], list[dict]]:
    records, rows = [], []
    for record in trial.records():
        records.append({k: v for k, v in record.items() if k != "elapsed_s"})
        rows += trial.take_phase_rows()
    return records, rows


@pytest.mark.parametrize(
    "overrides",
    [dict(k=3, lr=0.3), dict(trainer="plain", momentum=0.9), dict(k=1, optimizer="adam", lr=1e-2)],
)
def test_a_restored_trial_continues_with_the_same_records_and_phase_rows(overrides, tmp_path):
    cfg = tiny_config(measure_every=4, **overrides)
    records, rows = _records_and_rows(Trial(cfg))
    # as the adapter does: rows taken after each record, then the state saved
    trial, head = Trial(cfg), []
    for record in trial.records():
        head += trial.take_phase_rows()
        if record["step"] == 10:
            torch.save(trial.state_dict(), tmp_path / "taken.pt")
            break
    restored = Trial(cfg)
    restored.load_state_dict(torch.load(tmp_path / "taken.pt", weights_only=False))
    tail_records, tail_rows = _records_and_rows(restored)
    assert _same(head + tail_rows, rows) and len(head) > 1 and tail_rows
    assert _same(tail_records, records[2:])
    # rows not yet taken when the state was saved are part of it: handed out after the restore
    _, restored, _ = interrupted_run(cfg, 10, tmp_path)  # runs it to the end
    assert _same(restored.take_phase_rows(), rows)


def test_a_version_2_state_loads_with_default_stability_and_trains_on_identically(tmp_path):
    cfg = tiny_config(k=3, lr=0.3, measure_every=4)
    unbroken = list(Trial(cfg).records())
    trial = Trial(cfg)
    for record in trial.records():
        if record["step"] == 10:
            break
    saved = trial.state_dict()
    assert saved["version"] == STATE_VERSION == 3
    old = {k: v for k, v in saved.items() if k not in ("stability", "peak_train_loss")}
    restored = Trial(cfg)
    restored.load_state_dict({**old, "version": 2})
    new = (*STABILITY_KEYS, "peak_loss_ratio", "elapsed_s")
    training = [k for k in unbroken[0] if k not in new]
    tail = list(restored.records())
    assert _same([{k: r[k] for k in training} for r in tail],
                 [{k: r[k] for k in training} for r in unbroken[2:]])  # fmt: skip
    # the fields it lacked: measured again from its next due point; the peak from step 0's loss
    assert all(math.isfinite(r["sharpness"]) and r["peak_loss_ratio"] >= 1 for r in tail)
    assert restored.take_phase_rows()[0]["step"] == 12


# ---- the default study's arms, small ---------------------------------------------------------------
@pytest.mark.slow
def test_the_default_studys_arms_measure_what_they_should():
    """k_sweep's arms (K=1, a middle K, K=∞, plain Adam) on digits, shortened."""
    base = dict(dataset="digits", total_steps=60, eval_every=20, lr=0.05, dtype="float64")
    arms = {
        "K=1": dict(k=1),
        "K=7": dict(k=7),
        "K=inf": dict(k="inf"),
        "plain adam": dict(trainer="plain", optimizer="adam", lr=1e-3),
    }
    for name, arm in arms.items():
        trial = Trial({**base, **arm})
        records, rows = _records_and_rows(trial)
        assert all(math.isfinite(r["sharpness"]) and r["sharpness"] > 0 for r in records), name
        sgd = arm.get("optimizer", "sgd") == "sgd"
        assert all(math.isfinite(r["lr_sharpness"]) == sgd for r in records), name
        updates = [r for r in rows if r["feature_updates"] > 0]
        assert bool(updates) == (name != "K=inf"), name
        if trial.cfg.trainer == "linearised":
            assert all(math.isfinite(r["lin_gap"]) for r in updates), name
        assert len({r["step"] for r in rows}) == len(rows), name
