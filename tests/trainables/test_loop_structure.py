"""The trial loop's pieces: each trainer's step, the schedule, the measures' cache, and the
state saved as one dataclass, against the behaviour they were split out of."""

from __future__ import annotations

import math

import pytest
import torch

from tests.oracles import flat_params, interrupted_run, tiny_config
from trainables import Trial
from trainables.gauss_newton import gauss_newton_direction
from trainables.linearise import loss_fn
from trainables.schedule import Phase, Schedule, is_move_step
from trainables.state import STATE_VERSION, TrialState
from trainables.steps import GaussNewtonStep, LinearisedStep, PlainStep

TRAINERS = {
    "plain": dict(trainer="plain", momentum=0.9),
    "linearised": dict(trainer="linearised", k=4, optimizer="adam", lr=1e-2),
    "converging": dict(trainer="linearised", k=12, solve_to_convergence=True,
                       convergence_patience=2, convergence_rtol=0.05),
    "gauss_newton": dict(trainer="gauss_newton", solver="auto", lr=0.2, damping=1e-2),
}  # fmt: skip


def _clean(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in records]


def _same(a: object, b: object) -> bool:
    """Equal, with nan equal to nan (tensors: the same values exactly)."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@pytest.mark.parametrize("name", TRAINERS)
def test_a_restored_trial_yields_the_records_of_an_unbroken_run(name, tmp_path):
    cfg = tiny_config(probe_size=6, **TRAINERS[name])
    unbroken = Trial(cfg)
    expected = _clean(list(unbroken.records()))
    _, restored, records = interrupted_run(cfg, 10, tmp_path)
    assert _same(_clean(records), expected)
    # and it ends in the same state, field for field
    end, want = restored.state_dict(), unbroken.state_dict()
    end.pop("elapsed_s"), want.pop("elapsed_s")
    assert _same(end, want)


def test_the_state_round_trips_through_its_dict_as_a_whole():
    trial = Trial(tiny_config(k=3, momentum=0.9, probe_size=6))
    for record in trial.records():
        if record["step"] == 20:
            break
    saved = trial.state_dict()
    assert saved["version"] == STATE_VERSION
    fields = set(TrialState.__dataclass_fields__)
    assert set(saved) == fields | {"version", "config"}
    again = Trial(trial.cfg)
    again.load_state_dict(saved)
    assert _same(again.state_dict() | {"elapsed_s": 0.0}, saved | {"elapsed_s": 0.0})
    # restoring copies: training on leaves the saved state as it was
    before = {k: v.clone() for k, v in saved["theta_s"].items()}
    list(again.records())
    assert _same(saved["theta_s"], before)


def test_an_unknown_state_version_is_refused_clearly():
    trial = Trial(tiny_config(total_steps=4, probe_size=0))
    with pytest.raises(ValueError, match="version 99 is not"):
        trial.load_state_dict({**trial.state_dict(), "version": 99})


def test_the_plain_step_is_one_optimiser_step_on_the_network_loss():
    trial = Trial(tiny_config(trainer="plain", lr=0.1))
    assert isinstance(trial.trainer, PlainStep)
    x, y = trial.data.x_train[:16], trial.data.y_train[:16]
    theta = flat_params(trial.model)
    (grad,) = torch.autograd.grad(
        loss_fn("cross_entropy", trial.model(x), y), [*trial.theta.values()][:1]
    )
    loss = trial.trainer.step(x, y)
    assert not loss.requires_grad
    first = next(iter(trial.theta.values()))
    torch.testing.assert_close(first.detach(), theta[: first.numel()].view_as(first) - 0.1 * grad)


def test_the_linearised_step_at_its_point_is_the_plain_step_and_predicts_f_lin():
    cfg = tiny_config(lr=0.1)
    plain, lin = Trial({**cfg, "trainer": "plain"}), Trial({**cfg, "trainer": "linearised"})
    assert isinstance(lin.trainer, LinearisedStep)
    x, y = plain.data.x_train[:16], plain.data.y_train[:16]
    torch.testing.assert_close(plain.trainer.step(x, y), lin.trainer.step(x, y), rtol=1e-12, atol=0)
    torch.testing.assert_close(
        flat_params(plain.model), flat_params(lin.model), rtol=1e-12, atol=1e-14
    )
    # off the point, the prediction is the first-order model around θ_s, not the network
    x_test = lin.data.x_test[:8]
    assert not torch.allclose(lin.predict(x_test), lin.model(x_test))
    lin.trainer.move()  # θ_s ← θ: the linear model and the network agree at θ_s
    lin.state.at_lin_point = True
    torch.testing.assert_close(lin.predict(x_test), lin.model(x_test).detach())


def test_the_gauss_newton_step_moves_theta_by_lr_times_the_direction():
    trial = Trial(tiny_config(trainer="gauss_newton", solver="cg", lr=0.3, damping=1e-2))
    assert isinstance(trial.trainer, GaussNewtonStep)
    x, y = trial.data.x_train[:16], trial.data.y_train[:16]
    before = {k: v.detach().clone() for k, v in trial.theta.items()}
    d, loss, info = gauss_newton_direction(
        trial.model, before, x, y, "cross_entropy", 1e-2, solver="cg"
    )
    assert trial.trainer.step(x, y) == loss and trial.trainer.cg_iters == info.cg_iters > 0
    for name, p in trial.theta.items():
        torch.testing.assert_close(p.detach(), before[name] - 0.3 * d[name], rtol=0, atol=0)


def test_gauss_newton_direction_takes_its_solver_settings_by_keyword():
    trial = Trial(tiny_config(trainer="gauss_newton"))
    x, y = trial.data.x_train[:4], trial.data.y_train[:4]
    with pytest.raises(TypeError):
        gauss_newton_direction(trial.model, trial.theta, x, y, "mse", 1.0, "absolute", "cg", 1e-6)


def test_a_static_schedule_asks_only_is_move_step():
    cfg = Trial(tiny_config(k=4, total_steps=30)).cfg
    schedule, phase = Schedule(cfg), Phase()
    due = [t for t in range(40) if schedule.move_due(t, torch.tensor(math.nan), phase)]
    assert due == [t for t in range(40) if is_move_step(cfg)(t)] == [4, 8, 12, 16, 20, 24, 28]
    assert phase == Phase()  # the convergence test never ran


def test_solve_to_convergence_ends_a_phase_after_patience_stale_steps_or_at_the_cap():
    cfg = Trial(tiny_config(k=6, total_steps=30, solve_to_convergence=True,
                            convergence_patience=2, convergence_atol=0.0)).cfg  # fmt: skip
    schedule = Schedule(cfg)
    flat, phase = torch.tensor(1.0), Phase(start=10)
    assert [schedule.move_due(t, flat, phase) for t in (11, 12, 13)] == [False, False, True]
    falling, phase = 1.0, Phase(start=10)
    ends = []
    for t in range(11, 17):
        falling /= 2
        ends.append(schedule.move_due(t, torch.tensor(falling), phase))
    assert ends == [False] * 5 + [True]  # still improving: the cap k ends it
    assert phase.stale == 0


def test_the_probe_kernel_is_computed_once_per_linearisation_point():
    trial = Trial(tiny_config(k="inf", probe_size=6, total_steps=30, eval_every=5))
    records = list(trial.records())
    assert all(r["kernel_distance_init"] == 0.0 for r in records)  # K(θ_s) never moved
    kernels = trial.state.kernels
    assert kernels.K0 is kernels.prev is kernels.cache[1] and kernels.cache[0] == 0


@pytest.mark.parametrize("name", TRAINERS)
def test_the_stability_measures_leave_training_exactly_as_it_was(name):
    """Measured at every linearisation point, or not at all: the same records bit for bit
    (but the stability keys), the same parameters, the same optimiser state."""
    cfg = tiny_config(probe_size=6, measure_every=1, **TRAINERS[name])
    measured, unmeasured = Trial(cfg), Trial(cfg, stability=False)
    with_rows, without = _clean(list(measured.records())), _clean(list(unmeasured.records()))
    rows = (
        measured.take_phase_rows()
    )  # every point, measure_every=1: the initial one and each update
    assert len(rows) == with_rows[-1]["feature_updates"] + 1 and unmeasured.take_phase_rows() == []
    stability = {"sharpness", "lr_sharpness", "lr_sharpness_max", "lin_gap"}
    assert all(not math.isnan(r["sharpness"]) for r in with_rows)
    assert all(math.isnan(r[key]) for r in without for key in stability)
    strip = lambda rs: [{k: v for k, v in r.items() if k not in stability} for r in rs]  # noqa: E731
    assert _same(strip(with_rows), strip(without))
    end, want = measured.state_dict(), unmeasured.state_dict()
    for key in ("theta", "theta_s", "optimizer", "solver_memory", "kernels", "phase"):
        assert _same(end[key], want[key]), key
