"""reports: diverged trials as an outcome, duplicates counted once, scheduler-stopped trials,
bands within the metric's range, thresholds inside the data, the K axis.

Data from ``tests/reports/report_data.py``; each test checks a number, not only that nothing crashed.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

import reports
from reports._style import FLOOR_STEP, FLOOR_Y
from tests.reports.report_data import INF, Spec, Truth, make_study, rewrite

KS = (1, 2, 5, 10, 20, 40, 100, INF)


def _floor_markers(fig) -> int:
    """Markers drawn at the panel floor (y is an axes fraction there, stacked upwards)."""
    floor = FLOOR_Y + FLOOR_STEP * np.arange(6)
    count = 0
    for ax in fig.axes:
        for coll in ax.collections:
            y = np.asarray(coll.get_offsets()).reshape(-1, 2)[:, 1]
            count += int(np.isclose(y[:, None], floor[None, :]).any(axis=1).sum())
    return count


def _legend_texts(fig) -> list[str]:
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


# ---- diverged trials ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def diverging(tmp_path_factory) -> Path:
    """A K sweep where two extra seeds diverge at K=3 (T=1000)."""
    return make_study(tmp_path_factory.mktemp("div"),
                      Spec(study="div", ks=KS, seeds=(0, 1, 2), plain=(), probe=False,
                           diverged=2))  # fmt: skip


def test_a_row_flagged_diverged_makes_the_trial_diverged(diverging: Path, tmp_path: Path):
    trials_file = diverging / "results" / "trials.parquet"
    table = pd.read_parquet(trials_file)
    copy = tmp_path / "div"
    import shutil

    shutil.copytree(diverging, copy)
    table.assign(status="TERMINATED").to_parquet(copy / "results" / "trials.parquet")
    trials = reports.load_trials(copy)
    assert (trials["exclusion"] == "diverged").sum() == 2  # status says done, the rows say not
    assert (trials.loc[trials["exclusion"] == "diverged", "k"] == 3).all()


def test_a_fit_without_diverged_trials_says_so(diverging: Path):
    trials = reports.load_trials(diverging)
    fit = reports.fit_feature_updates(trials, n_boot=0).iloc[0]
    assert fit["fit_ok"], fit["reason"]
    assert fit["n_diverged"] == 2 and fit["diverged_k"] == "3"
    assert "fitted without 2 diverged trials (K = 3)" in fit["reason"]
    assert fit["n_trials"] == len(KS) * 3  # the diverged are no points


def test_diverged_trials_are_marked_on_the_figure_and_counted_in_its_legend(diverging: Path):
    from reports._groups import groups
    from reports._plot_updates import _draw

    trials = reports.load_trials(diverging)
    fits = reports.fit_feature_updates(trials, n_boot=0)
    fig = _draw(groups(trials, "linearised"), trials, fits)
    texts = _legend_texts(fig)
    assert any("diverged trial (2)" in t for t in texts), texts
    assert any("fitted without 2 diverged" in t for t in texts), texts
    assert _floor_markers(fig) == 2 * 6  # two trials on each of six panels
    plt.close(fig)


def test_summary_lists_diverged_trials_per_group(diverging: Path, tmp_path: Path):
    result = reports.write_report(diverging, tmp_path / "out", n_boot=0, figures=())
    text = result.summary.read_text()
    section = text.split("## Diverged trials and duplicates per group")[1].split("\n## ")[0]
    row = next(line for line in section.splitlines() if line.startswith("| all trials"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:4] == ["2", "3", "100, 101"]  # count, K, seeds
    assert "div_" in cells[4] and cells[5] == "0"
    fits_table = text.split("## Fits")[1]
    assert "diverged (not in fit)" in fits_table and "fitted without 2 diverged" in fits_table


# ---- duplicates ----------------------------------------------------------------------------
def test_duplicates_are_one_trial_not_extra_seeds(tmp_path: Path):
    study = make_study(tmp_path, Spec(study="dup", ks=(1, 10, 100, INF), seeds=(0,), plain=(),
                                      probe=True, duplicates=2))  # fmt: skip
    trials = reports.load_trials(study)
    copies = trials[trials["exclusion"] == "duplicate"]
    assert len(copies) == 2  # an exact copy, and K = 2T stored as given (K ≥ T is K=∞)
    kept = trials.loc[trials["exclusion"] == "", "trial_id"]
    assert set(copies["duplicate_of"]) <= set(kept)
    finals = reports.final_metrics(trials)
    lazy = finals[np.isinf(finals["k"].astype(float))]
    assert lazy["seeds"].tolist() == [1]  # one seed, not three
    assert lazy["test_acc_std"].isna().all()  # so no spread to report (was ± 0.0000)
    fit = reports.fit_feature_updates(trials, n_boot=0).iloc[0]
    assert fit["n_trials"] == 4
    rho = reports.measure_correlations(trials)
    assert rho["n_trials"].tolist() == [4]
    summary = reports.write_report(
        study, tmp_path / "out", n_boot=0, figures=()
    ).summary.read_text()
    section = summary.split("## Diverged trials and duplicates per group")[1].split("\n## ")[0]
    row = next(line for line in section.splitlines() if line.startswith("| all trials"))
    assert row.strip("| ").endswith("| 2")  # duplicates dropped, counted per group


def test_a_trainer_that_ignores_k_makes_one_trial_at_every_k(tmp_path: Path):
    study = make_study(tmp_path, Spec(study="plainks", ks=(1, 10, INF), seeds=(0, 1), plain=(),
                                      probe=False, extra_config={"trainer": "plain"}))  # fmt: skip
    trials = reports.load_trials(study)
    assert (trials["exclusion"] == "duplicate").sum() == 4  # 3 K × 2 seeds are 2 trials
    assert reports.final_metrics(trials)["seeds"].tolist() == [2]


def test_provenance_is_no_grouping_key(tmp_path: Path):
    study = make_study(tmp_path, Spec(study="prov", ks=(1, 10, INF), seeds=(0, 1), plain=(),
                                      probe=False))  # fmt: skip
    metrics = reports.load(study)
    trials = reports.load_trials(study)
    sha = dict(zip(trials["trial_id"], [f"{i:064x}" for i in range(len(trials))], strict=True))
    trials = trials.assign(data_sha256=trials["trial_id"].map(sha))
    from reports._schema import config_keys

    keys = config_keys(trials)
    assert "data_sha256" not in keys and "val_acc" not in keys and "acc_gap" not in keys
    assert {"init", "output_scale", "center_output", "val_size", "data_path"} <= set(keys)
    assert "val_acc" in metrics and len(reports.fit_feature_updates(trials, n_boot=0)) == 1


def test_scheduler_stopped_trials_enter_no_curve_and_are_counted(tmp_path: Path):
    study = make_study(tmp_path, Spec(study="asha", ks=KS, seeds=(0, 1, 2), plain=(),
                                      probe=False, stopped=3))  # fmt: skip
    trials = reports.load_trials(study)
    stopped = trials[trials["status"] == "STOPPED"]
    assert len(stopped) == 3 and (stopped["exclusion"] == "stopped by the scheduler").all()
    fit = reports.fit_feature_updates(trials, n_boot=0).iloc[0]
    assert fit["n_trials"] == len(KS) * 3
    text = reports.write_report(study, tmp_path / "out", n_boot=0, figures=()).summary.read_text()
    header, _, row = text.split("## Trials")[1].strip().splitlines()[:3]
    cells = dict(zip(header.strip("|").split("|"), row.strip("|").split("|"), strict=True))
    assert cells[" stopped by the scheduler "].strip() == "3"


# ---- statistics ---------------------------------------------------------------------------
def test_bands_stay_in_the_metric_range_and_need_three_seeds():
    from reports._stats import mean_band, mean_ci, metric_range, summarise

    near_one = np.array([1.0, 1.0, 1.0, 0.96])
    assert mean_ci(near_one)[2] > 1.0  # a t-band would leave [0, 1]
    mean, lo, hi = mean_band(near_one, metric_range("test_acc"))
    assert 0.0 <= lo <= mean <= hi <= 1.0
    near_zero = np.array([0.0, 0.0, 0.0, 0.3])
    assert mean_ci(near_zero)[1] < 0.0
    assert mean_band(near_zero, metric_range("train_loss"))[1] >= 0.0
    assert all(math.isnan(v) for v in mean_band(np.array([0.9, 0.95]))[1:])  # two seeds: none
    frame = pd.DataFrame({"N": [1, 1, 2, 2, 2], "test_acc": [0.9, 0.95, 1.0, 1.0, 0.9]})
    s = summarise(frame, "N", "test_acc").set_index("key")
    assert np.isnan(s.loc[1, "lo"]) and s.loc[2, "hi"] <= 1.0


def test_training_curve_bands_stay_in_range():
    from reports._plot_curves import _mean_curve

    rows = pd.DataFrame({"step": [0] * 4 + [10] * 4 + [20] * 2,
                         "test_acc": [0.1, 0.12, 0.09, 0.5, 1, 1, 1, 0.9, 0.97, 0.99]})  # fmt: skip
    curve = _mean_curve(rows, "test_acc")
    assert (curve["hi"].dropna() <= 1.0).all() and (curve["lo"].dropna() >= 0.0).all()
    assert np.isnan(curve.loc[20, "lo"])  # two seeds report at step 20: no band


def test_n90_is_reported_when_the_transition_lies_below_one_update(tmp_path: Path):
    truth = Truth(n50=0.5, slope=1.0, a_inf=0.80, a_1=0.95, noise=0.002)
    ks = (1, 10, 100, 250, 500, INF)  # N = 999, 99, 9, 3, 1, 0
    study = make_study(tmp_path, Spec(study="early", truth=truth, ks=ks, seeds=(0, 1, 2),
                                      plain=(), probe=False))  # fmt: skip
    fit = reports.fit_feature_updates(reports.load_trials(study), n_boot=40).iloc[0]
    assert fit["fit_ok"], fit["reason"]
    assert math.isnan(fit["n50"]) and fit["n50_param"] < 1  # below the data: not reported
    assert fit["n90"] == pytest.approx(truth.n_q(0.9), rel=0.35)  # 4.5, inside [1, 999]
    assert fit["n90_lo"] <= fit["n90"] <= fit["n90_hi"]
    assert "below the sampled N range" in fit["reason"]
    from reports._plot_updates import _threshold

    assert _threshold(fit, "n50") == "N₅₀ < 1"
    assert _threshold(fit, "n90").startswith("N₉₀ = ")


def test_a_curve_worse_than_the_mean_prints_no_negative_f():
    from reports._fit import _no_better_than_mean, short_reason

    y = np.array([0.8, 0.9, 0.8, 0.9, 0.85])
    why = _no_better_than_mean(y, residual=np.full(5, 0.5))
    assert "worse than their mean" in why and "F =" not in why
    why = _no_better_than_mean(y, residual=0.9 * (y - y.mean()))
    assert "F = " in why and "-" not in why.split("F = ")[1][:2]
    short = short_reason(why)
    assert "F =" not in short and not short.endswith("(F")


def test_the_top_k_axis_has_no_tick_below_one(tmp_path: Path):
    from reports._groups import groups
    from reports._plot_updates import _draw

    study = make_study(tmp_path, Spec(study="kaxis", ks=KS, seeds=(0, 1, 2), plain=(),
                                      probe=False))  # fmt: skip
    trials = reports.load_trials(study)
    fig = _draw(groups(trials, "linearised"), trials, reports.fit_feature_updates(trials, n_boot=0))
    fig.canvas.draw()
    secondary = [c for ax in fig.axes for c in ax.child_axes]
    assert secondary
    for sec in secondary:
        lo, hi = sorted(sec.get_xlim())
        ticks = [t for t in sec.xaxis.get_majorticklocs() if lo <= t <= hi]
        assert ticks and min(ticks) >= 1, ticks
    plt.close(fig)


def test_every_figure_marks_the_diverged(tmp_path: Path, monkeypatch):
    from reports import _plot_curves, _plot_measure, _plot_phase

    study = make_study(tmp_path, Spec(study="every", ks=KS, total_steps=(500, 1000),
                                      seeds=(0, 1, 2), plain=(), diverged=2))  # fmt: skip
    data = reports._load.read_studies(study)
    seen: dict[str, list] = {}

    def keep(name):
        def save(fig, *args, **kwargs):
            texts = _legend_texts(fig) + [t.get_text() for ax in fig.axes for t in ax.texts]
            seen.setdefault(name, []).extend([*texts, fig._suptitle.get_text()
                                              if fig._suptitle else ""])  # fmt: skip
            floor = seen.setdefault(name + "_floor", [0])
            floor[0] += _floor_markers(fig)  # over every page
            plt.close(fig)
            return []

        return save

    for name, module in (("curves", _plot_curves), ("phase", _plot_phase),
                         ("measure", _plot_measure)):  # fmt: skip
        monkeypatch.setattr(module, "save", keep(name))
    reports.plot_training_curves(data.metrics, data.trials, tmp_path / "c")
    reports.plot_phase_diagram(data.trials, tmp_path / "p")
    reports.plot_measure(data.trials, tmp_path / "m")
    assert any("diverged (2)" in t for t in seen["curves"]) and seen["curves_floor"] == [2]
    assert "✕2" in seen["phase"] and any("2 in all" in t for t in seen["phase"])
    assert any("(2 diverged)" in t for t in seen["measure"]) and seen["measure_floor"] == [2]


# ---- outcomes as they happened (issue 20) ------------------------------------------------
def _bend(study: Path, trial: str, change) -> None:
    """Rewrite one trial's train_loss in its rows and in trials.parquet (status kept)."""

    def apply(frame: pd.DataFrame) -> pd.DataFrame:
        mine = frame["trial_id"] == trial
        if not mine.any():
            return frame
        rows = frame.loc[mine]
        if "step" not in rows:  # trials.parquet: the trial's last record, at step T
            rows = rows.assign(step=rows["total_steps"])
        frame.loc[mine, "train_loss"] = change(rows)
        return frame

    rewrite(study, apply)


def test_a_trial_that_ends_above_its_initial_loss_is_diverged_whatever_its_status(
    tmp_path: Path,
):
    from reports._load import ABOVE_INITIAL

    study = make_study(tmp_path, Spec(study="blow", ks=(1, 10, INF), seeds=(0, 1), plain=(),
                                      probe=False))  # fmt: skip
    trials = reports.load_trials(study)
    up, spike = trials["trial_id"].iloc[2], trials["trial_id"].iloc[3]
    first = float(reports.load(study).query("trial_id == @up and step == 0")["train_loss"].iloc[0])
    # a blow-up that ends at 43 × the initial loss: below the trainer's 100× divergence rule
    _bend(study, up, lambda rows: np.where(rows["step"] == 1000, 43 * first,
                                           rows["train_loss"]))  # fmt: skip
    # a spike to 3 × the initial loss half way, then recovered
    _bend(study, spike, lambda rows: np.where(rows["step"] == 500, 3 * rows["train_loss"].iloc[0],
                                              rows["train_loss"]))  # fmt: skip
    assert (pd.read_parquet(study / "results" / "trials.parquet")["status"] == "TERMINATED").all()
    trials = reports.load_trials(study).set_index("trial_id")
    assert trials.loc[up, "status"] == "DIVERGED" and trials.loc[up, "exclusion"] == "diverged"
    assert trials.loc[up, "divergence"] == ABOVE_INITIAL
    assert trials.loc[up, "peak_loss_ratio"] == pytest.approx(43.0)
    assert trials.loc[spike, "status"] == "TERMINATED" and trials.loc[spike, "usable"]
    assert trials.loc[spike, "peak_loss_ratio"] == pytest.approx(3.0)  # computed from the rows
    others = trials.drop([up, spike])
    assert (others["status"] == "TERMINATED").all() and (others["peak_loss_ratio"] == 1.0).all()
    text = reports.write_report(study, tmp_path / "out", n_boot=0, figures=()).summary.read_text()
    assert "Outcome rule:" in text and "1 trial counted as diverged by this rule" in text
    assert "1 finished trial had a training-loss spike" in text


def test_a_recorded_peak_loss_ratio_is_kept_as_the_trainer_wrote_it(tmp_path: Path):
    study = make_study(tmp_path, Spec(study="peak", ks=(1, INF), seeds=(0,), plain=(),
                                      probe=False, peak=True, diverged=1))  # fmt: skip
    rewrite(study, lambda f: f.assign(peak_loss_ratio=np.where(
        f["trial_id"] == "peak_00000", 7.5, f["peak_loss_ratio"])))  # fmt: skip
    trials = reports.load_trials(study).set_index("trial_id")
    assert trials.loc["peak_00000", "peak_loss_ratio"] == 7.5  # the file's, not recomputed
    assert trials.loc["peak_00000", "usable"]  # a spike it recovered from: finished
    lost = trials[trials["exclusion"] == "diverged"]
    assert len(lost) == 1 and np.isinf(lost["peak_loss_ratio"]).all()
    assert lost["divergence"].tolist() == ["flagged"]


# ---- thresholds inside the data ----------------------------------------------------------
def test_a_bound_past_the_data_is_censored_with_a_flag():
    from reports._fit import censor

    row = {"n_min": 1.0, "n_max": 30.0, "n50": 5.0, "n50_lo": 1.14, "n50_hi": 51.5,
           "n90": 45.0, "n90_lo": 12.0, "n90_hi": 80.0, "reason": ""}  # fmt: skip
    out = censor(row)
    assert "n50" not in out and "n50_lo" not in out  # inside: kept as they are
    assert math.isnan(out["n50_hi"]) and out["n50_hi_flag"] == "> N_max"
    assert math.isnan(out["n90"]) and out["n90_flag"] == "> N_max"
    assert math.isnan(out["n90_hi"]) and out["n90_lo_flag"] == ""
    assert "N₉₀ lies above the sampled N range [1, 30]" in out["reason"]
    below = censor({"n_min": 1.0, "n_max": 30.0, "n50": 0.4, "n50_lo": 0.1, "n50_hi": 2.0})
    assert below["n50_flag"] == "< N_min" and below["n50_lo_flag"] == "< N_min"
    assert "starts below one feature update" in below["reason"]


@pytest.fixture(scope="module")
def late(tmp_path_factory) -> Path:
    """N sampled in [1, 30] (the default study's K), the transition at N₅₀ = 20: N₉₀ = 180
    lies beyond the data."""
    truth = Truth(n50=20.0, slope=1.0, a_inf=0.80, a_1=0.95, noise=0.003)
    return make_study(tmp_path_factory.mktemp("late"),
                      Spec(study="late", truth=truth, ks=(1, 33, 62, 125, 200, 333, 500, INF),
                           seeds=(0, 1, 2, 3, 4), plain=(), probe=False))  # fmt: skip


def test_thresholds_beyond_the_sampled_range_are_flags_not_numbers(late: Path, tmp_path: Path):
    from reports._fit import FLAGS

    fit = reports.fit_feature_updates(reports.load_trials(late), n_boot=100, seed=2).iloc[0]
    assert fit["fit_ok"], fit["reason"]
    assert (fit["n_min"], fit["n_max"]) == (1.0, 30.0)
    assert fit["n90_flag"] == "> N_max" and math.isnan(fit["n90"])
    for name in ("n50", "n90"):
        for side in ("", "_lo", "_hi"):
            value, flag = fit[f"{name}{side}"], fit[f"{name}{side}_flag"]
            if np.isfinite(value):  # no finite threshold or bound outside the data
                assert 1.0 <= value <= 30.0 and flag == "", (name, side, value)
            elif flag:
                assert flag in ("< N_min", "> N_max")
    assert any(fit[f] for f in FLAGS)
    reports.write_report(late, tmp_path / "out", n_boot=40, figures=())
    csv = pd.read_csv(tmp_path / "out" / "fits.csv", keep_default_na=False)
    assert {"n_min", "n_max", *FLAGS} <= set(csv.columns)
    assert csv["n90_flag"].iloc[0] == "> N_max" and csv["n90"].iloc[0] == ""


def test_a_censored_threshold_is_an_arrow_and_a_rejected_fit_draws_none(late: Path, tmp_path):
    from matplotlib.text import Annotation

    from reports._groups import groups
    from reports._plot_updates import THRESHOLD_GID, _draw

    def thresholds(fig) -> tuple[int, int]:
        found = fig.findobj(lambda a: a.get_gid() == THRESHOLD_GID)
        return len(found), sum(isinstance(a, Annotation) for a in found)

    trials = reports.load_trials(late)
    fits = reports.fit_feature_updates(trials, n_boot=40, seed=2)
    fig = _draw(groups(trials, "linearised"), trials, fits)
    drawn, arrows = thresholds(fig)
    assert drawn > 0 and arrows >= 1  # N₉₀ beyond the data: an arrow at N = 30
    texts = _legend_texts(fig)
    assert any("N₉₀ > 30" in t for t in texts), texts
    plt.close(fig)
    inside = (trials["k"] > 1) & np.isfinite(trials["k"])
    rng = np.random.default_rng(3)  # accuracy no longer depends on N: the fit is rejected
    trials.loc[inside, "test_acc"] = rng.permutation(trials.loc[inside, "test_acc"].to_numpy())
    fits = reports.fit_feature_updates(trials, n_boot=0)
    assert not fits["fit_ok"].iloc[0]
    fig = _draw(groups(trials, "linearised"), trials, fits)
    assert thresholds(fig) == (0, 0)  # no threshold of any kind
    assert any("no fit" in t and "raw means, no threshold" in t for t in _legend_texts(fig))
    means = fig.axes[0].get_lines()
    # the raw means joined, N = 1 … 30 and K=1 at N = T − 1
    assert any(ln.get_linestyle() == "-" and len(ln.get_xdata()) == 7 for ln in means)
    plt.close(fig)


# ---- every count in a legend equals the count in the tables ------------------------------
def test_training_curve_legends_count_what_the_tables_count(tmp_path: Path, monkeypatch):
    import re

    from reports import _plot_curves
    from reports._summary import outcome_counts

    study = make_study(tmp_path, Spec(study="counts", ks=(1, 10, 100, INF), seeds=(0, 1, 2),
                                      plain=("sgd",), probe=False, running=2, diverged=3,
                                      stopped=2, errored=1, lrs=(0.05, 0.4),
                                      diverge_at={"lr": 0.9}))  # fmt: skip
    data = reports._load.read_studies(study)
    pages: list[dict] = []

    def keep(fig, *args, **kwargs):
        counts: dict[str, int] = {}
        for text in _legend_texts(fig):
            m = re.match(r"(finished|running|diverged|stopped by the scheduler) \((\d+)\)", text)
            if m:
                counts[m.group(1)] = int(m.group(2))
        panels = [ax for ax in fig.axes if ax.get_visible()]
        pages.append({"counts": counts, "panels": len(panels), "floor": _floor_markers(fig)})
        plt.close(fig)
        return []

    monkeypatch.setattr(_plot_curves, "save", keep)
    reports.plot_training_curves(data.metrics, data.trials, tmp_path / "c")
    table = outcome_counts(data.trials).set_index("trainer").loc["linearised"]
    total = {k: sum(p["counts"].get(k, 0) for p in pages) for k in ("finished", "running",
                                                                     "diverged")}  # fmt: skip
    total["stopped by the scheduler"] = sum(p["counts"].get("stopped by the scheduler", 0)
                                            for p in pages)  # fmt: skip
    assert total == {k: int(table[k]) for k in total}, (total, table)
    assert total["diverged"] == 3 and total["stopped by the scheduler"] == 2
    # the diverged lr (0.9) had no finished trial at all: it still has its page, a panel per K
    assert len(pages) == 3 and sum(p["floor"] for p in pages) == 3 + 2
    # lr 0.05: K = 1, 10, 100, ∞ and 3 (the stopped); lr 0.4: four K; lr 0.9: K = 3 alone
    assert [p["panels"] for p in pages] == [5, 4, 1]


def test_a_config_key_missing_from_some_trials_is_no_crash_and_no_duplicate() -> None:
    """A study resumed across versions: a key added later (lr_units) is null on older trials."""
    from reports._load import _mark_duplicates
    from reports._schema import CONFIG

    table = pd.DataFrame({
        "study": ["s", "s", "s"], "trial_id": ["a", "b", "c"], "exclusion": ["", "", ""],
        "k": [1.0, 1.0, 1.0], "lr": [0.1, 0.1, 0.1], "lr_units": [None, "absolute", None],
    })  # fmt: skip
    table.attrs["roles"] = {"k": CONFIG, "lr": CONFIG, "lr_units": CONFIG}
    marked = _mark_duplicates(table)
    assert list(marked["duplicate_of"]) == ["", "", "a"]  # c copies a; b differs from both
