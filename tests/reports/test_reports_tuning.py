"""reports: learning rate tuned per K on validation, figures against lr and damping λ,
matched training loss, and searcher studies that never split into one-trial groups.

Each test checks the number a reader would take away, not only that a file was written.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

import reports
from reports._config import NOT_REQUESTED
from reports._tune import TUNED, tune_on_validation
from tests.reports.report_data import INF, ROLES, Spec, make_study
from tests.reports.test_reports import run_cli

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
    result = reports.write_report(
        study, tmp_path / "out", n_boot=0, figures=["feature_updates_tuned"]
    )
    text = result.summary.read_text()
    assert "Not tuned:" in text and "test accuracy is never used in its place" in text
    assert result.selected_csv is None and not (tmp_path / "out" / "selected.csv").exists()
    assert result.skipped["feature_updates_tuned"] != NOT_REQUESTED
    assert set(result.fits["view"]) == {"fixed"}


@pytest.mark.slow  # a subprocess: the command line draws two figures
def test_report_lists_the_rule_the_choices_and_fits_the_tuned_view(tuned_study: Path, tmp_path):
    out = tmp_path / "out"
    done = run_cli(tuned_study, "--out", out, "--bootstrap", "0",
                   "--figures", "feature_updates, feature_updates_tuned")  # fmt: skip
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
    result = reports.write_report(tuned_study, tmp_path / "out", n_boot=0, tune=(),
                                  figures=["feature_updates_tuned"])  # fmt: skip
    assert result.skipped["feature_updates_tuned"] != NOT_REQUESTED and result.selected.empty


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

    def keep(fig, out, formats, page=0):  # the page itself is the test above's claim
        seen["texts"] = _legend_texts(fig)
        seen["xlabel"] = fig.axes[-1].get_xlabel()
        seen["xscale"] = fig.axes[0].get_xscale()
        plt.close(fig)
        return []

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
    from tests.reports.test_reports import _sampled_study

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


# ---- the bracket rule (issue 20) ---------------------------------------------------------
def _cell(
    k: float,
    scores: dict[float, list[float]],
    lost: dict[float, int] | None = None,
    other: dict[float, str] | None = None,
    examples: int | None = None,
) -> list[dict]:
    """Rows of one K: per lr, one finished seed per validation score, `lost` diverged seeds,
    and `other` (lr → exclusion) for a value with no finished seed."""
    rows = []
    for lr, vals in scores.items():
        for s, v in enumerate(vals):
            row = {"k": k, "lr": lr, "seed": s, "val_acc": v, "train_acc": v + 0.05}
            rows.append(row | ({"val_examples": examples} if examples is not None else {}))
    for lr, n in (lost or {}).items():
        rows += [{"k": k, "lr": lr, "seed": 10 + s, "val_acc": math.nan, "exclusion": "diverged"}
                 for s in range(n)]  # fmt: skip
    for lr, why in (other or {}).items():
        rows.append({"k": k, "lr": lr, "seed": 0, "val_acc": math.nan, "exclusion": why})
    return rows


def test_each_pick_is_classed_against_its_cells_grid():
    from reports._load import STOPPED_REASON

    grid = (0.1, 0.2, 0.4)
    rows = _cell(10.0, {0.1: [0.90] * 5, 0.2: [0.92] * 5, 0.4: [0.95] * 4}, lost={0.4: 1})
    rows += _cell(INF, {0.1: [0.80] * 5, 0.2: [0.82] * 5, 0.4: [0.85] * 5})
    rows += _cell(1.0, {0.1: [0.90] * 5, 0.2: [0.88] * 5, 0.4: [0.86] * 5})
    rows += _cell(20.0, {0.1: [0.88] * 5, 0.2: [0.91] * 5, 0.4: [0.90] * 5})
    rows += _cell(40.0, {0.1: [0.88] * 5, 0.2: [0.91] * 5}, other={0.4: "errored"})
    rows += _cell(50.0, {0.1: [0.88] * 5, 0.2: [0.91] * 5}, other={0.4: STOPPED_REASON})
    rows += _cell(60.0, {0.2: [0.91] * 5})
    chosen = tune_on_validation(_frame(rows)).selected.set_index("k")
    expected = {10.0: (0.2, "stability-limited"),  # one seed of five diverged at the next lr
                INF: (0.4, "edge-high"), 1.0: (0.1, "edge-low"), 20.0: (0.2, "interior"),
                40.0: (0.2, "undetermined"),  # the next lr has no finished seed
                50.0: (0.2, "interior"),  # a scheduler-stopped value scored no better
                60.0: (0.2, "edge-high")}  # fmt: skip
    for k, (lr, cls) in expected.items():
        assert (chosen.loc[k, "lr"], chosen.loc[k, "bracketed"]) == (lr, cls), k
    assert chosen.loc[10.0, "next_larger_lr"] == 0.4 and math.isnan(
        chosen.loc[INF, "next_larger_lr"]
    )
    assert chosen.loc[10.0, "grid_size"] == len(grid) and chosen.loc[60.0, "grid_size"] == 1
    assert "one value in the grid" in chosen.loc[60.0, "note"]


def test_bracket_precedence_on_the_rule_itself():
    from reports._tune import DIVERGED, STOPPED, UNFINISHED, USABLE, bracket_class

    assert bracket_class({0.1: USABLE, 0.2: DIVERGED}, 0.2) == "edge-high"  # largest first
    assert bracket_class({0.1: USABLE, 0.2: DIVERGED}, 0.1) == "stability-limited"
    assert bracket_class({0.1: USABLE, 0.2: USABLE}, 0.1) == "edge-low"
    assert bracket_class({0.1: USABLE, 0.2: STOPPED}, 0.1) == "edge-low"
    assert bracket_class({0.05: USABLE, 0.1: USABLE, 0.2: UNFINISHED}, 0.1) == "undetermined"
    assert bracket_class({0.05: USABLE, 0.1: USABLE, 0.2: USABLE}, 0.1) == "interior"
    assert bracket_class({0.1: USABLE}, 0.1) == "edge-high"


def test_the_margin_is_the_lead_over_the_runner_up_in_validation_examples():
    rows = _cell(10.0, {0.1: [0.900, 0.910], 0.2: [0.920, 0.924], 0.4: [0.918, 0.918]},
                 examples=1000)  # fmt: skip
    (row,) = tune_on_validation(_frame(rows)).selected.itertuples()
    assert row.lr == 0.2 and row.runner_up_lr == 0.4
    assert row.margin_val_acc == pytest.approx(0.922 - 0.918)
    assert row.margin_val_examples == pytest.approx(4.0)  # four digits of a thousand: noise
    old = tune_on_validation(_frame(_cell(10.0, {0.1: [0.9], 0.2: [0.92]})))
    assert math.isnan(old.selected["margin_val_examples"].iloc[0])
    assert old.selected["margin_val_acc"].iloc[0] == pytest.approx(0.02)
    assert any("val_examples" in n for n in old.notes)  # the summary says why it is empty


def _limited_shift(k: float, lr: float) -> tuple[float, float]:
    """Larger lr is better on validation everywhere it trains."""
    return (0.0, {0.1: -0.02, 0.2: 0.0, 0.4: 0.01}.get(lr, 0.0))


def test_report_names_stability_limited_k_and_warns_on_edge_picks(tmp_path: Path):
    study = make_study(tmp_path, Spec(study="limited", ks=(1, 10, 100, INF), seeds=(0, 1, 2),
                                      lrs=(0.1, 0.2, 0.4), shift=_limited_shift, plain=("adam",),
                                      plain_lrs=(1e-4, 1e-3), probe=False, diverged=1,
                                      diverge_at={"k": 10.0, "lr": 0.4}, val_examples=1000))  # fmt: skip
    result = reports.write_report(study, tmp_path / "out", n_boot=0, figures=())
    selected = pd.read_csv(tmp_path / "out" / "selected.csv")
    assert "bracketed" in selected.columns and selected["bracketed"].notna().all()
    lin = selected[selected["trainer"] == "linearised"].set_index("k")
    assert lin.loc[10.0, "lr"] == 0.2 and lin.loc[10.0, "bracketed"] == "stability-limited"
    assert (lin.drop(10.0)["bracketed"] == "edge-high").all()
    assert np.isfinite(lin["margin_val_examples"]).all()
    plain = selected[selected["trainer"] == "plain"]  # the reference arm is tuned on its grid
    assert len(plain) == 1 and plain["lr"].iloc[0] in (1e-4, 1e-3)
    assert plain["bracketed"].iloc[0] in ("edge-high", "edge-low")
    text = result.summary.read_text()
    section = text.split("## Learning rate tuned per K on validation")[1].split("\n## ")[0]
    assert "**Stability-limited**" in section and "linearised K=10" in section
    warning = next(line for line in section.splitlines() if "Warning" in line)
    assert "linearised K=1," in warning and not re.search(r"K=10(?!\d)", warning)
    assert "plain adam" in warning
    assert "*edge-high* when" in section  # the rule is stated


# ---- Gauss-Newton: η tuned per λ ---------------------------------------------------------
def _gn_shift(damping: float, lr: float) -> float:
    """η = 1 best at λ ≥ 1e-3; η = 10 best at λ = 1e3 (a large λ needs a large step)."""
    if damping >= 1e2:
        return {0.1: -0.2, 1.0: -0.1, 10.0: 0.0}[lr]
    return {0.1: -0.02, 1.0: 0.0, 10.0: -0.05}[lr]


@pytest.fixture(scope="module")
def gn_study(tmp_path_factory) -> Path:
    return make_study(tmp_path_factory.mktemp("gn"),
                      Spec(study="gn", ks=(), seeds=(0, 1, 2), plain=(), probe=False,
                           gn_dampings=(1e-6, 1e-3, 1.0, 1e3), gn_lrs=(0.1, 1.0, 10.0),
                           gn_shift=_gn_shift))  # fmt: skip


def test_gauss_newton_tunes_the_step_per_damping_on_validation(gn_study: Path):
    from reports._tune import gauss_newton_by_damping

    trials = reports.load_trials(gn_study)
    tuning = tune_on_validation(trials)
    assert tuning is not None and not tuning.refused and tuning.trials.empty  # no K to view
    per = tuning.selected.set_index("damping")
    assert per["lr"].to_dict() == {1e-6: 1.0, 1e-3: 1.0, 1.0: 1.0, 1e3: 10.0}
    assert per.loc[1.0, "bracketed"] == "interior" and per.loc[1e3, "bracketed"] == "edge-high"
    table = gauss_newton_by_damping(trials).set_index("damping")
    done = trials[trials["usable"]]
    for lam, row in table.iterrows():  # the pick's train and test accuracy, from the trials
        at = done[(done["damping"] == lam) & (done["lr"] == row["lr"])]
        assert row["train_acc_mean"] == pytest.approx(at["train_acc"].mean())
        assert row["test_acc_mean"] == pytest.approx(at["test_acc"].mean())
    best = table["train_acc_mean"].max()
    under = table["train_acc_mean"] < best - 0.05
    assert (table.loc[under, "outcome"] == "under-trained").all() and under.any()
    assert (table.loc[~under, "outcome"] == "matched").all() and (~under).any()


def test_a_damping_where_every_step_diverged_is_marked(gn_study: Path, tmp_path, monkeypatch):
    from reports import _plot_sweep
    from reports._tune import gauss_newton_by_damping

    trials = reports.load_trials(gn_study)
    at = trials["damping"] == 1e-6
    trials.loc[at, ["exclusion", "usable", "status"]] = ["diverged", False, "DIVERGED"]
    table = gauss_newton_by_damping(trials).set_index("damping")
    assert table.loc[1e-6, "outcome"] == "diverged" and table.loc[1e-6, "n_diverged"] == 9
    assert table.loc[1e-6, "bracketed"] == "" and math.isnan(table.loc[1e-6, "lr"])
    seen = {}
    monkeypatch.setattr(_plot_sweep, "save", lambda fig, *a, **k: seen.update(
        texts=_legend_texts(fig), axes=fig.axes) or plt.close(fig) or [])  # fmt: skip
    reports.plot_damping(trials, tmp_path / "damping")
    n_under = int((table["outcome"] == "under-trained").sum())
    assert (
        f"under-trained λ ({n_under}): tuned train accuracy > 5 points below the best λ's"
        in (seen["texts"])
    )
    assert "λ where every η diverged (1)" in seen["texts"]
    assert "η tuned per λ on validation" in seen["texts"]
    assert any("diverged trial (9)" in t for t in seen["texts"])
    vlines = [ln for ln in seen["axes"][0].get_lines() if list(ln.get_xdata()) == [1e-6, 1e-6]]
    assert len(vlines) == 1  # the diverged λ, drawn where it is


def test_the_summary_tells_matched_from_under_trained_damping(gn_study: Path, tmp_path: Path):
    text = reports.write_report(
        gn_study, tmp_path / "out", n_boot=0, figures=()
    ).summary.read_text()
    section = text.split("## Gauss-Newton: step η tuned per damping λ on validation")[1]
    section = section.split("\n## ")[0]
    assert "under-trained" in section and "matched" in section
    assert "percentage points below the best λ's" in section  # the rule is stated
    selected = pd.read_csv(tmp_path / "out" / "selected.csv")
    assert (selected["trainer"] == "gauss_newton").all() and len(selected) == 4
