"""reports: learning rate tuned per K on validation, figures against lr and damping λ,
matched training loss, and searcher studies that never split into one-trial groups.

Each test checks the number a reader would take away, not only that a file was written.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

import reports
from reports._tune import TUNED, tune_on_validation
from tests.report_data import INF, ROLES, Spec, make_study
from tests.test_reports import run_cli

KS = (1, 2, 5, 10, 20, 40, 100, INF)


def _legend_texts(fig) -> list[str]:
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


def _shift(k: float, lr: float) -> tuple[float, float]:
    """At K=∞ the test set prefers lr 0.01 but validation prefers lr 0.1; elsewhere lr 0.1
    is better on both."""
    if math.isinf(k):
        return (0.03, 0.0) if lr == 0.01 else (0.0, 0.02)
    return (0.0, 0.0) if lr == 0.1 else (-0.02, -0.02)


@pytest.fixture(scope="module")
def tuned_study(tmp_path_factory) -> Path:
    return make_study(tmp_path_factory.mktemp("tune"),
                      Spec(study="tune", ks=KS, seeds=(0, 1, 2), lrs=(0.01, 0.1), shift=_shift,
                           plain=("sgd",), probe=False))  # fmt: skip


def _frame(rows: list[dict]) -> pd.DataFrame:
    base = {"study": "s", "trainer": "linearised", "total_steps": 100, "exclusion": "",
            "test_acc": 0.5}  # fmt: skip
    frame = pd.DataFrame([base | r for r in rows])
    frame["trial_id"] = [f"t{i}" for i in range(len(frame))]
    frame.attrs["roles"] = ROLES  # the columns' roles, as the service's files state them
    return frame


# ---- selection ----------------------------------------------------------------------------
def test_selection_is_on_validation_even_when_test_prefers_another_lr(tuned_study: Path):
    trials = reports.load_trials(tuned_study)
    tuning = tune_on_validation(trials)
    assert tuning is not None and not tuning.refused
    chosen = tuning.selected.set_index(["trainer", "k"])["lr"]
    assert chosen[("linearised", INF)] == 0.1  # val-best; test alone would pick 0.01
    done = trials[trials["usable"] & np.isinf(trials["k"])]
    by_lr = done.groupby("lr")["test_acc"].mean()
    assert by_lr[0.01] > by_lr[0.1]  # the test set really prefers the other one
    assert (chosen.drop(("linearised", INF)) == 0.1).all()
    assert chosen[("plain", 1.0)] == 0.1  # the plain baseline is tuned too
    view = tuning.trials
    assert (view["lr"] == TUNED).all() and set(view["__lr"]) == {0.1}
    assert len(view[view["trainer"] == "linearised"]) == len(KS) * 3  # one lr per K, all seeds


def test_ties_go_to_the_smaller_lr_and_a_diverging_lr_is_no_candidate():
    rows = [{"k": 10.0, "lr": lr, "seed": s, "val_acc": 0.9} for lr in (0.3, 0.1) for s in (0, 1)]
    rows += [{"k": INF, "lr": 1.0, "seed": s, "val_acc": 0.99} for s in (0, 1)]
    rows += [{"k": INF, "lr": 1.0, "seed": 2, "val_acc": math.nan, "exclusion": "diverged"}]
    rows += [{"k": INF, "lr": 0.1, "seed": s, "val_acc": 0.8} for s in (0, 1, 2)]
    tuning = tune_on_validation(_frame(rows))
    chosen = tuning.selected.set_index("k")
    assert chosen.loc[10.0, "lr"] == 0.1 and "tie" in chosen.loc[10.0, "note"]
    assert chosen.loc[INF, "lr"] == 0.1  # lr 1.0 scores higher but diverged on one seed
    assert "1 diverged" in chosen.loc[INF, "candidates"]


def test_no_validation_accuracy_refuses_tuning_and_never_uses_test(tmp_path: Path):
    study = make_study(tmp_path, Spec(study="old", ks=KS, seeds=(0, 1, 2), lrs=(0.01, 0.1),
                                      shift=_shift, plain=(), probe=False, val=False))  # fmt: skip
    trials = reports.load_trials(study)
    tuning = tune_on_validation(trials)
    assert tuning.refused and "val_acc" in tuning.refused and tuning.trials.empty
    result = reports.write_report(study, tmp_path / "out", n_boot=0)
    text = result.summary.read_text()
    assert "Not tuned:" in text and "test accuracy is never used in its place" in text
    assert result.selected_csv is None and not (tmp_path / "out" / "selected.csv").exists()
    assert "feature_updates_tuned" in result.skipped
    assert set(result.fits["view"]) == {"fixed"}


def test_report_lists_the_rule_the_choices_and_fits_the_tuned_view(tuned_study: Path, tmp_path):
    out = tmp_path / "out"
    done = run_cli(tuned_study, "--out", out, "--bootstrap", "0")
    assert done.returncode == 0, done.stderr
    selected = pd.read_csv(out / "selected.csv")
    lin = selected[selected["trainer"] == "linearised"]
    assert len(lin) == len(KS) and (lin["lr"] == 0.1).all()
    assert {"val_acc_mean", "candidates", "seeds"} <= set(selected.columns)
    text = (out / "summary.md").read_text()
    section = text.split("## Learning rate tuned per K on validation")[1].split("\n## ")[0]
    assert (
        "Test accuracy is never used to select" in section and "ties go to the smaller" in section
    )
    assert "lr=0.01: val" in section  # every candidate with its validation score
    fits = pd.read_csv(out / "fits.csv")
    tuned = fits[fits["view"] == "tuned"]
    assert len(tuned) == 1 and tuned["n_trials"].iloc[0] == len(KS) * 3
    assert len(fits[fits["view"] == "fixed"]) == 2  # the untuned view: one fit per lr
    assert (out / "feature_updates_tuned.png").stat().st_size > 20_000
    assert (out / "feature_updates.png").is_file()  # the untuned view stays


def test_tune_none_makes_no_tuned_view(tuned_study: Path, tmp_path: Path):
    result = reports.write_report(tuned_study, tmp_path / "out", n_boot=0, tune=())
    assert "feature_updates_tuned" in result.skipped and result.selected.empty


# ---- figures against a swept key ---------------------------------------------------------
@pytest.fixture(scope="module")
def lr_sweep(tmp_path_factory) -> Path:
    """lr_sweep's shape: plain and IL at K = 1, 100, ∞ over four lr, one diverging at lr 1."""
    return make_study(tmp_path_factory.mktemp("lr"),
                      Spec(study="lr_sweep", ks=(1, 100, INF), seeds=(0,), lrs=(1e-3, 1e-2, 0.1),
                           plain=("sgd",), probe=False, diverged=1,
                           diverge_at={"k": 100.0, "lr": 1.0, "seed": 0}))  # fmt: skip


def test_lr_figure_draws_one_line_per_trainer_and_k_with_divergence_marked(lr_sweep: Path):
    from reports._plot_sweep import sweep_lines

    trials = reports.load_trials(lr_sweep)
    lines = sweep_lines(trials, "lr", ("plain", "linearised"))
    labels = sorted(g.label for g in lines)
    assert labels == ["linearised, K=1", "linearised, K=100", "linearised, K=∞", "plain"]
    assert all(g.trials["lr"].nunique() == 3 for g in lines)  # not one group per lr
    files = reports.plot_lr(trials, lr_sweep / "figs" / "lr")
    assert [f.name for f in files] == ["lr.png"]
    one_k = trials[trials["k"] != 100]  # a group at a single K is no curve in N: no fit row
    assert reports.fit_feature_updates(one_k[one_k["trainer"] != "linearised"], n_boot=0).empty
    lone = trials[(trials["trainer"] == "linearised") & (trials["k"] == 100)]
    assert reports.fit_feature_updates(lone, n_boot=0).empty


def test_lr_figure_legend_counts_the_diverged(lr_sweep: Path, monkeypatch):
    from reports import _plot_sweep

    seen = {}
    real_save = _plot_sweep.save

    def keep(fig, out, formats, page=0):
        seen["texts"] = _legend_texts(fig)
        seen["xlabel"] = fig.axes[-1].get_xlabel()
        seen["xscale"] = fig.axes[0].get_xscale()
        return real_save(fig, out, formats, page)

    monkeypatch.setattr(_plot_sweep, "save", keep)
    reports.plot_lr(reports.load_trials(lr_sweep), lr_sweep / "figs2" / "lr")
    assert "linearised, K=100 (1 diverged)" in seen["texts"]
    assert any("diverged trial (1)" in t for t in seen["texts"])
    assert seen["xscale"] == "log" and "learning rate" in seen["xlabel"]


def test_damping_figure_has_accuracy_gap_and_marks_divergence(tmp_path: Path, monkeypatch):
    from reports import _plot_sweep

    study = make_study(tmp_path, Spec(study="gn", ks=(), seeds=(0, 1, 2), plain=(), probe=False,
                                      gn_dampings=(1e-6, 1e-3, 1.0, 1e3), gn_lrs=(1.0,),
                                      diverged=1, diverge_at={"trainer": "gauss_newton",
                                      "k": 1.0, "lr": 1.0, "damping": 1e-6}))  # fmt: skip
    seen = {}
    monkeypatch.setattr(_plot_sweep, "save", lambda fig, *a, **k: seen.update(
        labels=[ax.get_ylabel() for ax in fig.axes], texts=_legend_texts(fig)) or plt.close(fig)
        or [])  # fmt: skip
    reports.plot_damping(reports.load_trials(study), tmp_path / "damping")
    assert "accuracy gap, train − test" in seen["labels"] and "train accuracy" in seen["labels"]
    assert "lr=1 (1 diverged)" in seen["texts"]
    assert any("diverged trial (1)" in t for t in seen["texts"])


# ---- matched training loss ---------------------------------------------------------------
def test_matched_view_reads_each_trial_where_it_reaches_the_target(tmp_path: Path):
    from reports._groups import groups
    from reports._plot_matched import matched_train_loss

    study = make_study(tmp_path, Spec(study="match", ks=(1, 10, 100, INF), seeds=(0, 1, 2),
                                      plain=(), probe=False))  # fmt: skip
    data = reports._load.read_studies(study)
    group = groups(data.trials, "linearised")[0]
    m, target = matched_train_loss(data.metrics, group.trials)
    assert target == pytest.approx(group.trials["train_loss"].max())  # the worst final one
    assert m["matched_test_acc"].notna().all()  # every finished trial reaches it
    worst = group.trials.loc[group.trials["train_loss"].idxmax(), "trial_id"]
    assert m.set_index("trial_id").loc[worst, "matched_step"] == 1000  # at its final record
    rows = data.metrics.set_index("trial_id")
    for _, r in m.iterrows():  # the first record at or below the target, and no earlier one
        trial = rows.loc[r["trial_id"]].sort_values("step")
        before = trial[trial["step"] < r["matched_step"]]
        assert (before["train_loss"] > target).all()
        at = trial[trial["step"] == r["matched_step"]]
        assert at["train_loss"].iloc[0] <= target
        assert at["test_acc"].iloc[0] == r["matched_test_acc"]
    m, _ = matched_train_loss(data.metrics, group.trials, target=1e-9)
    assert m["matched_test_acc"].isna().all()  # never reached: marked, not guessed


def test_matched_figure_marks_trials_that_never_reach_the_target(tmp_path: Path, monkeypatch):
    from reports import _plot_matched

    study = make_study(tmp_path, Spec(study="match", ks=(1, 10, 100, INF), seeds=(0, 1, 2),
                                      plain=(), probe=False))  # fmt: skip
    data = reports._load.read_studies(study)
    seen = {}
    monkeypatch.setattr(_plot_matched, "save", lambda fig, *a, **k: seen.update(
        texts=_legend_texts(fig)) or plt.close(fig) or [])  # fmt: skip
    reports.plot_matched_train_loss(data.metrics, data.trials, tmp_path / "m", target=1e-9)
    assert any("never reached the target (12)" in t for t in seen["texts"]), seen["texts"]


# ---- searcher studies --------------------------------------------------------------------
def _sampled(root: Path) -> Path:
    from tests.test_reports import _sampled_study

    return _sampled_study(root)


def test_a_searcher_study_is_never_split_into_one_trial_groups(tmp_path: Path):
    from reports._groups import groups

    trials = reports.load_trials(_sampled(tmp_path))
    (group,) = groups(trials, "linearised")
    assert len(group.trials) == 12  # one group of every trial, not twelve of one
    fixed = reports.fit_feature_updates(trials, n_boot=0)
    assert len(fixed) == 1 and "sampled by a searcher" in fixed["reason"].iloc[0]
    tuning = tune_on_validation(trials)
    per_k = tuning.selected.set_index("k")
    assert len(per_k) == 4 and (per_k["n_candidates"] == 3).all()  # 3 sampled lr at each K
    for k, row in per_k.iterrows():
        at_k = trials[trials["k"] == k]
        assert row["lr"] == at_k.loc[at_k["val_acc"].idxmax(), "lr"]


# ---- reference levels from elsewhere -----------------------------------------------------
def test_a_missing_level_is_borrowed_from_another_study_and_labelled(tmp_path: Path, monkeypatch):
    from reports import _plot_updates

    mid = (2, 5, 10, 20, 40, 100, INF)  # no K=1 of its own
    a = make_study(tmp_path / "a", Spec(study="a", ks=mid, seeds=(0, 1, 2), plain=(),
                                        probe=False))  # fmt: skip
    b = make_study(tmp_path / "b", Spec(study="b", ks=(1,), seeds=(0, 1, 2), plain=(),
                                        probe=False))  # fmt: skip
    c = make_study(tmp_path / "c", Spec(study="c", ks=(1,), seeds=(0, 1, 2), plain=(),
                                        probe=False, lrs=(0.5,)))  # fmt: skip
    alone = reports.fit_feature_updates(reports.load_trials(a), n_boot=0).iloc[0]
    assert not alone["fit_ok"] and "no K=1" in alone["reason"]
    other_lr = reports.fit_feature_updates(reports.load_trials([a, c]), n_boot=0)
    assert "no K=1" in other_lr.set_index("study").loc["a", "reason"]  # config differs: no
    trials = reports.load_trials([a, b])
    fit = reports.fit_feature_updates(trials, n_boot=0).set_index("study").loc["a"]
    assert fit["fit_ok"] and "K=1 level borrowed from study b" in fit["levels_from"]
    k1 = trials[(trials["study"] == "b") & trials["usable"]]
    assert fit["a_1"] == pytest.approx(k1["test_acc"].mean())
    seen = {}
    monkeypatch.setattr(_plot_updates, "save", lambda fig, *a, **k: seen.setdefault(
        "texts", []).extend(_legend_texts(fig)) or plt.close(fig) or [])  # fmt: skip
    reports.plot_feature_updates(trials, tmp_path / "f")
    assert any("K=1 level borrowed from study b" in t for t in seen["texts"]), seen["texts"]


def test_plain_training_is_the_k1_level_a_sweep_lacks(tmp_path: Path):
    """One-shot's t = T reference: plain SGD with the same config is K=1."""
    study = make_study(tmp_path, Spec(study="noone", ks=(2, 5, 10, 20, 40, 100, INF),
                                      seeds=(0, 1, 2), plain=("sgd",), probe=False))  # fmt: skip
    trials = reports.load_trials(study)
    fit = reports.fit_feature_updates(trials, n_boot=0).iloc[0]
    assert fit["fit_ok"], fit["reason"]
    assert "K=1 level from plain sgd trials" in fit["levels_from"]
    plain = trials[(trials["trainer"] == "plain") & trials["usable"]]
    assert fit["a_1"] == pytest.approx(plain["test_acc"].mean())


def test_a_geometric_schedule_is_compared_with_uniform_at_matched_n(tmp_path: Path):
    from reports._compare import schedule_comparison

    study = make_study(tmp_path, Spec(study="sched", ks=KS, seeds=(0, 1, 2), plain=(),
                                      probe=False))  # fmt: skip
    uniform = reports.load_trials(study)
    inner = uniform[(uniform["k"] > 1) & np.isfinite(uniform["k"]) & uniform["usable"]]
    geometric = inner.assign(schedule="geometric", trial_id=inner["trial_id"] + "g",
                             test_acc=inner["test_acc"] + 0.01)  # fmt: skip
    between = geometric[geometric["k"] == 10].assign(  # N = 70: between uniform 49 and 99
        feature_updates=70, trial_id=lambda t: t["trial_id"] + "m"
    )
    table = schedule_comparison(pd.concat([uniform, geometric, between], ignore_index=True))
    same = table[table["uniform_at"] == "same N"]
    assert len(same) == 6 and np.allclose(same["difference"], 0.01, atol=1e-9)
    (mid,) = table[table["N"] == 70].itertuples()
    u = uniform[uniform["usable"]].groupby("feature_updates")["test_acc"].mean()
    w = (math.log(70) - math.log(49)) / (math.log(99) - math.log(49))
    assert mid.uniform_acc == pytest.approx((1 - w) * u[49] + w * u[99])
    assert "interpolated" in mid.uniform_at


def test_a_one_shot_sweep_is_a_curve_in_t_though_every_k_is_inf(tmp_path: Path):
    study = make_study(tmp_path, Spec(study="os", ks=KS, seeds=(0, 1, 2), plain=(),
                                      probe=False))  # fmt: skip
    uniform = reports.load_trials(study)
    # one-shot stores K=∞ (its effective config) and counts t SGD steps as N = t
    one_shot = uniform.assign(schedule="one_shot", one_shot_at=uniform["feature_updates"],
                              k=INF)  # fmt: skip
    fit = reports.fit_feature_updates(one_shot, n_boot=0)
    assert len(fit) == 1 and fit["fit_ok"].iloc[0], fit["reason"].iloc[0]
    assert fit["n_trials"].iloc[0] == len(KS) * 3
    no_t_equal_t = one_shot[one_shot["feature_updates"] < 999]
    why = reports.fit_feature_updates(no_t_equal_t, n_boot=0)["reason"].iloc[0]
    assert why.startswith("no K=1") and "t = T" in why


def test_several_tuned_keys_are_chosen_together_on_validation():
    rows = [{"k": 10.0, "lr": lr, "momentum": m, "seed": s, "val_acc": v, "test_acc": t}
            for lr, m, v, t in ((0.1, 0.0, 0.90, 0.99), (0.1, 0.9, 0.95, 0.80),
                                (0.3, 0.0, 0.93, 0.99), (0.3, 0.9, 0.91, 0.99))
            for s in (0, 1)]  # fmt: skip
    tuning = tune_on_validation(_frame(rows), ("lr", "momentum"))
    (row,) = tuning.selected.itertuples()
    assert (row.lr, row.momentum) == (0.1, 0.9)  # the best validation pair, worst on test
    assert set(tuning.trials["__momentum"]) == {0.9} and (tuning.trials["momentum"] == TUNED).all()


def test_a_searcher_page_rings_the_validation_best_trial(tmp_path: Path, monkeypatch):
    from reports import _plot_updates

    trials = reports.load_trials(_sampled(tmp_path))
    lin = trials[trials["usable"]]
    best = lin.loc[lin["val_acc"].idxmax()]
    seen = {}
    monkeypatch.setattr(_plot_updates, "save", lambda fig, *a, **k: seen.update(
        texts=_legend_texts(fig)) or plt.close(fig) or [])  # fmt: skip
    reports.plot_feature_updates(trials, tmp_path / "f")
    ring = next(t for t in seen["texts"] if t.startswith("best"))
    assert ring.startswith("best validation accuracy") and f"lr={best['lr']:.3g}" in ring
