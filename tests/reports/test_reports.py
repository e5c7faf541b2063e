"""reports: loading the results layout, fitting N₅₀ with CIs, figures, summary, the CLI.

Data come from ``tests/reports/report_data.py``, written the way the study service writes them, with
final test accuracy drawn from the fit's own model at known parameters.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import reports
from reports._config import NOT_REQUESTED
from reports._load import read_studies
from tests.reports.report_data import INF, ROLES, Spec, Truth, make_study, write_parquet

ROOT = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FIGURES = ("feature_updates", "matched_train_loss", "phase_diagram", "training_curves", "damping",
           "proxy_vs_measure")  # fmt: skip
# figures a study without an lr sweep, or with K on a grid, does not get
ALL_FIGURES = (*FIGURES, "feature_updates_tuned", "lr", "adaptive_placement")
# small grids keep the whole file fast; two T values make the phase diagram and per-T fits
FULL = dict(ks=(1, 2, 5, 10, 20, 40, 100, INF), total_steps=(500, 1000), seeds=(0, 1, 2),
            gn_dampings=(1e-6, 1e-3, 1.0), running=2, diverged=2, errored=1)  # fmt: skip


def run_cli(*args: str | Path, check_modules: bool = False) -> subprocess.CompletedProcess:
    """``python -m reports ARGS`` in a subprocess (optionally reporting heavy imports)."""
    code = "import sys, runpy; sys.argv[0] = 'reports'; runpy.run_module('reports', run_name='__main__')"
    if check_modules:
        code = ("import sys; from reports.__main__ import main; rc = main(sys.argv[1:]); "
                "print('HEAVY', sorted({'ray', 'torch'} & set(sys.modules)), file=sys.stderr); "
                "sys.exit(rc)")  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=120, cwd=ROOT)  # fmt: skip


def files_under(path: Path) -> set[Path]:
    return {p for p in path.rglob("*")} if path.exists() else set()


# ---- fixtures -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def full_study(tmp_path_factory) -> Path:
    """Two T, K sweep with references, plain and GN baselines, probe, and failed trials."""
    return make_study(tmp_path_factory.mktemp("studies"), Spec(study="full", **FULL))


@pytest.fixture(scope="module")
def full_data(full_study: Path):
    """The full study, read once: ``.metrics`` (load) and ``.trials`` (load_trials)."""
    return read_studies(full_study)


@pytest.fixture(scope="module")
def cli_report(full_study: Path) -> tuple[Path, subprocess.CompletedProcess]:
    """The full study's report, written once through the command line."""
    out = full_study.parent / "full_report"
    done = run_cli(full_study, "--out", out, "--bootstrap", "20", check_modules=True)
    assert done.returncode == 0, done.stderr
    return out, done


@pytest.fixture(scope="module")
def tables_report(full_study: Path) -> Path:
    """The full study's fits, selection and summary, written once in-process with no figure."""
    out = full_study.parent / "tables_report"
    reports.write_report(full_study, out, n_boot=20, figures=())
    return out


# ---- loading ------------------------------------------------------------------------------
def test_load_reads_the_results_layout(full_data):
    metrics, trials = full_data.metrics, full_data.trials
    assert {"study", "trial_id", "step", "k", "test_acc", "kernel_distance_init"} <= set(metrics)
    assert not metrics.duplicated(["study", "trial_id", "step"]).any()
    assert len(trials) == metrics["trial_id"].nunique() == trials["trial_id"].nunique()
    counts = trials["exclusion"].value_counts()
    assert counts["diverged"] == 2 and counts["errored"] == 1 and counts["in progress"] == 2
    lazy = trials[np.isinf(trials["k"]) & trials["usable"]]
    assert (lazy["feature_updates"] == 0).all()  # K=∞: N = 0
    k10 = trials[(trials["k"] == 10) & (trials["total_steps"] == 1000)]
    assert (k10["feature_updates"] == 99).all()  # N = ⌈T/K⌉ − 1: no move after the last step


def test_config_keys_leave_out_provenance_and_timings():
    from reports._schema import config_keys

    columns = ["study", "trial_id", "trainer", "k", "one_shot_at", "lr", "seed", "step",
               "test_acc", "attempt", "reported_at", "device", "node", "ilstudy_version",
               "torch_version", "started_at", "wall_s", "logdir", "data_dir", "status"]  # fmt: skip
    columns = pd.DataFrame(columns=columns)
    columns.attrs["roles"] = ROLES  # as the service's files state them
    assert config_keys(columns) == ["trainer", "k", "one_shot_at", "lr", "seed"]


def test_load_skips_temporary_files(tmp_path: Path):
    study = make_study(tmp_path, Spec(study="hive", ks=(1, 10, INF), seeds=(0,), plain=()))
    metrics_dir = study / "results" / "metrics"
    for junk in (".part.parquet", "_tmp.parquet", "x.parquet.tmp"):
        (metrics_dir / junk).write_bytes(b"half-written")
    metrics = reports.load(study)
    assert sorted(metrics["trial_id"].unique()) == ["hive_00000", "hive_00001", "hive_00002"]
    assert reports.load(study / "results")["trial_id"].nunique() == 3  # results/ itself works


def test_partial_study_without_trials_table_infers_status(tmp_path: Path):
    study = make_study(tmp_path, Spec(study="partial", ks=(1, 10, INF), seeds=(0, 1), plain=(),
                                      running=2, trials_table=False))  # fmt: skip
    trials = reports.load_trials(study)
    assert (trials.loc[trials["k"] == 10, "status"] == "RUNNING").all()
    assert (trials.loc[trials["k"] != 10, "status"] == "TERMINATED").all()
    fits = reports.fit_feature_updates(trials, n_boot=0)
    assert not fits["fit_ok"].any()  # no finished point between the references: reported
    assert "distinct N" in fits["reason"].iloc[0]


def test_several_studies_are_told_apart(tmp_path: Path):
    a = make_study(tmp_path / "a", Spec(study="same", ks=(1, INF), seeds=(0,), plain=()))
    b = make_study(tmp_path / "b", Spec(study="same", ks=(1, INF), seeds=(0,), plain=()))
    metrics = reports.load([a, b])
    assert metrics["study"].nunique() == 2 and len(metrics) == 2 * len(reports.load(a))
    assert reports.default_out([a, b]) == a / "report" / "compare_same"
    assert reports.default_out([a]) == a / "report"


# ---- fitting ------------------------------------------------------------------------------
def test_model_thresholds_are_closed_form():
    n = reports.n_at_fraction(40.0, 2.0, np.array([0.5, 0.9]))
    np.testing.assert_allclose(n, [40.0, 40.0 * 3.0])  # (0.9/0.1)^(1/2) = 3
    level = reports.sigmoid_model(n, 0.8, 0.95, 40.0, 2.0)
    np.testing.assert_allclose(level, [0.875, 0.8 + 0.9 * 0.15])
    assert reports.sigmoid_model(np.array([0.0]), 0.8, 0.95, 40.0, 2.0)[0] == pytest.approx(0.8)


def test_fit_recovers_known_parameters_with_covering_cis(tmp_path: Path):
    truth = Truth(n50=40.0, slope=2.0, a_inf=0.80, a_1=0.95, noise=0.004)
    study = make_study(tmp_path, Spec(study="known", truth=truth, plain=(), probe=False))
    fits = reports.fit_feature_updates(reports.load_trials(study), n_boot=200, seed=1)
    assert len(fits) == 1
    fit = fits.iloc[0]
    assert fit["fit_ok"], fit["reason"]
    assert fit["n50"] == pytest.approx(truth.n50, rel=0.2)
    assert fit["slope"] == pytest.approx(truth.slope, rel=0.3)
    assert fit["n90"] == pytest.approx(truth.n_q(0.9), rel=0.25)
    for name, value in (("n50", truth.n50), ("slope", truth.slope), ("n90", truth.n_q(0.9))):
        assert fit[f"{name}_lo"] <= value <= fit[f"{name}_hi"], name
    # levels: means of 4 seeds (a percentile bootstrap of 4 values is narrow, so no CI check);
    # the K=1 trials sit at N = T − 1, a hair below the asymptote a_1: that is the level they measure
    se = truth.noise / 2
    assert fit["a_inf"] == pytest.approx(truth.a_inf, abs=4 * se)
    assert fit["a_1"] == pytest.approx(truth.acc(999), abs=4 * se)
    assert fit["a_1_lo"] <= fit["a_1"] <= fit["a_1_hi"]
    assert fit["n_boot_ok"] == 200


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"ks": (1, 5, 20, 100)}, "no K=∞"),
        ({"ks": (5, 20, 100, INF)}, "no K=1"),
        ({"ks": (1, 10, 100, INF)}, "distinct N"),
        ({"truth": Truth(a_inf=0.9, a_1=0.9)}, "do not differ"),
    ],
    ids=["no-lazy", "no-sgd", "too-few", "no-gap"],
)
def test_unfittable_groups_say_why(tmp_path: Path, changes: dict, reason: str):
    study = make_study(tmp_path, Spec(study="bad", plain=(), probe=False,
                                      **{"ks": (1, 5, 20, 100, INF), "seeds": (0, 1, 2)} | changes))  # fmt: skip
    fits = reports.fit_feature_updates(reports.load_trials(study), n_boot=20)
    assert len(fits) == 1 and not fits["fit_ok"].iloc[0]
    assert reason in fits["reason"].iloc[0]
    assert math.isnan(fits["n50"].iloc[0])  # never guessed


def test_fit_accepts_metric_rows_and_fits_each_total_steps(full_data):
    fits = reports.fit_feature_updates(full_data.metrics, n_boot=0)
    assert sorted(fits["total_steps"]) == [500, 1000] and fits["fit_ok"].all()
    assert fits["n50_lo"].isna().all()  # no bootstrap asked for: no CI, no made-up bounds


# ---- the full report, through the command line -------------------------------------------
@pytest.mark.slow  # a subprocess drawing every figure of the full study
def test_cli_writes_every_figure_and_imports_neither_ray_nor_torch(cli_report, tables_report):
    out, done = cli_report
    assert "HEAVY []" in done.stderr
    assert str(out) in done.stdout and "fitting 2 groups (bootstrap 20)" in done.stderr
    summary = (out / "summary.md").read_text()
    for name in FIGURES:
        path = out / f"{name}.png"
        assert path.stat().st_size > 20_000, name
        assert path.read_bytes()[:8] == PNG_MAGIC
        height, width = matplotlib.image.imread(path).shape[:2]
        assert width >= 700 and height >= 500, (name, width, height)
        assert f"]({name}.png)" in summary
    in_process = (tables_report / "fits.csv").read_text()
    assert (out / "fits.csv").read_text() == in_process


def test_fits_csv_and_summary(tables_report: Path, full_data):
    out = tables_report
    fits = pd.read_csv(out / "fits.csv")
    assert len(fits) == 2 and fits["fit_ok"].all()
    for name in ("n50", "n90"):
        assert (fits[f"{name}_lo"] <= fits[name]).all() and (fits[name] <= fits[f"{name}_hi"]).all()
        for side in ("", "_lo", "_hi"):  # every threshold and bound inside the sampled N
            inside = fits[f"{name}{side}"].between(fits["n_min"], fits["n_max"])
            assert (inside | fits[f"{name}{side}_flag"].isin(["< N_min", "> N_max"])).all()
    selected = pd.read_csv(out / "selected.csv", keep_default_na=False)  # GN's η per λ
    gn = selected[selected["trainer"] == "gauss_newton"]
    assert len(gn) == 2 * 3 and (gn["bracketed"] != "").all() and gn["lr"].notna().all()  # T × λ
    trials = full_data.trials
    used = trials[trials["usable"] & (trials["trainer"] == "linearised")]
    expected = used.groupby("total_steps").size()  # running, diverged, errored left out
    assert fits.set_index("total_steps")["n_trials"].to_dict() == expected.to_dict()
    summary = (out / "summary.md").read_text()
    assert "**diverged** (2)" in summary and "**errored** (1)" in summary
    assert "**in progress** (2)" in summary and "Spearman" in summary and "N₅₀" in summary
    assert "± " in summary  # final metrics: mean ± std


def test_report_on_a_study_that_has_only_started(tmp_path: Path):
    """Nothing finished, no trials.parquet yet: curves of the running trials, no fit."""
    study = make_study(tmp_path, Spec(study="early", ks=(10, 100), seeds=(0,), plain=(),
                                      probe=False, running=2, trials_table=False))  # fmt: skip
    result = reports.write_report(study, n_boot=0, formats=("pdf", "svg"))
    assert result.out == study / "report"
    pdf, svg = result.figures["training_curves"]
    assert pdf.suffix == ".pdf" and pdf.read_bytes()[:5] == b"%PDF-"
    assert svg.suffix == ".svg" and b"<svg" in svg.read_bytes()[:2000]
    # every figure but the curves is skipped (figures added later are skipped too)
    assert set(ALL_FIGURES) - {"training_curves"} <= set(result.skipped)
    assert "training_curves" not in result.skipped
    assert result.fits.empty and result.fits_csv.read_text().startswith("group,")
    text = result.summary.read_text()
    assert "**in progress** (2)" in text and "No finished trial yet" in text


# ---- bad input: exit 2, one line, nothing written ---------------------------------------
def _not_ours(path: Path) -> Path:
    (path / "results" / "metrics").mkdir(parents=True)
    pd.DataFrame({"x": [1, 2]}).to_parquet(path / "results" / "metrics" / "a.parquet")
    return path


def _corrupt(path: Path) -> Path:
    (path / "results" / "metrics").mkdir(parents=True)
    (path / "results" / "metrics" / "a.parquet").write_bytes(b"PAR1 this is not parquet PAR1")
    return path


def _all_diverged(path: Path) -> Path:
    study = make_study(path, Spec(study="boom", ks=(), plain=(), diverged=2))
    return study


def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path: Path):
    empty = tmp_path / "empty"
    (empty / "results").mkdir(parents=True)
    cases = {
        "no results": (empty, "no results yet"),
        "missing folder": (tmp_path / "nowhere", "no such folder"),
        "not ours": (_not_ours(tmp_path / "ours"), "missing columns"),
        "corrupt": (_corrupt(tmp_path / "corrupt"), "not a readable Parquet file"),
        "all diverged": (_all_diverged(tmp_path / "div"), "diverged"),
    }
    before = files_under(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = {name: subprocess.Popen([sys.executable, "-m", "reports", str(path)], cwd=ROOT, env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name, (path, _) in cases.items()}  # fmt: skip
    procs["bad format"] = subprocess.Popen(
        [sys.executable, "-m", "reports", str(empty), "--format", "gif"], cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    procs["bad figure"] = subprocess.Popen(
        [sys.executable, "-m", "reports", str(empty), "--figures", "lr,histogram"], cwd=ROOT,
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    for name, proc in procs.items():
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 2, (name, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, (name, err)
        assert err.startswith("python -m reports: "), (name, err)
        if name in cases:
            assert cases[name][1] in err, (name, err)
    assert files_under(tmp_path) == before


def test_library_raises_report_error(tmp_path: Path):
    with pytest.raises(reports.ReportError, match="no such folder"):
        reports.load(tmp_path / "nowhere")
    with pytest.raises(reports.ReportError, match="diverged"):
        reports.write_report(_all_diverged(tmp_path))
    assert not (tmp_path / "boom" / "report").exists()


# ---- interchange --------------------------------------------------------------------------
def test_fixture_and_outputs_read_in_pandas_pyarrow_duckdb_polars(
    full_study: Path, full_data, tables_report: Path
):
    duckdb = pytest.importorskip("duckdb")
    polars = pytest.importorskip("polars")
    out = tables_report
    metrics_glob = str(full_study / "results" / "metrics" / "*.parquet")
    trials_file = full_study / "results" / "trials.parquet"
    rows = len(full_data.metrics)
    assert len(pd.read_parquet(full_study / "results" / "metrics")) == rows
    assert pq.read_table(trials_file).num_rows == len(pd.read_parquet(trials_file))
    con = duckdb.connect()
    assert con.execute(f"select count(*) from read_parquet('{metrics_glob}')").fetchone()[0] == rows
    assert (
        con.execute(f"select count(*) from read_csv_auto('{out / 'fits.csv'}')").fetchone()[0] == 2
    )
    assert polars.read_parquet(metrics_glob).height == rows
    assert polars.read_parquet(trials_file).height == len(pd.read_parquet(trials_file))
    fits = polars.read_csv(out / "fits.csv")
    assert fits.height == 2 and "n50_lo" in fits.columns
    assert pq.read_table(trials_file).schema.field("k").type == "double"
    assert full_data.metrics["k"].dtype == np.float64


def test_other_schedules_borrow_the_levels_they_lack(tmp_path: Path):
    study = make_study(tmp_path, Spec(study="sched", seeds=(0, 1), plain=(), probe=False))
    uniform = reports.load_trials(study)
    geometric = uniform[(uniform["k"] > 1) & uniform["usable"]].assign(
        schedule="geometric", trial_id=lambda t: t["trial_id"] + "g"
    )  # no K=1 (N = T − 1) trial on the geometric schedule
    fits = reports.fit_feature_updates(pd.concat([uniform, geometric], ignore_index=True), n_boot=0)
    by_schedule = fits.set_index("schedule")
    assert by_schedule.loc["uniform", "levels_from"] == "group"
    assert "K=1 level from the schedule=uniform" in by_schedule.loc["geometric", "levels_from"]
    assert by_schedule["fit_ok"].all()
    assert by_schedule.loc["geometric", "a_1"] == by_schedule.loc["uniform", "a_1"]


def test_non_monotone_junk_is_reported_not_fitted(tmp_path: Path):
    study = make_study(tmp_path, Spec(study="junk", ks=(1, 2, 5, 10, 20, 50, 100, INF),
                                      seeds=(0, 1, 2), plain=(), probe=False))  # fmt: skip
    trials = reports.load_trials(study)
    inside = (trials["k"] > 1) & np.isfinite(trials["k"])
    rng = np.random.default_rng(3)  # accuracy no longer depends on N: shuffle it among the K
    trials.loc[inside, "test_acc"] = rng.permutation(trials.loc[inside, "test_acc"].to_numpy())
    fit = reports.fit_feature_updates(trials, n_boot=0).iloc[0]
    assert not fit["fit_ok"] and math.isnan(fit["n50"])
    assert "transition" in fit["reason"], fit["reason"]


def _sampled_study(root: Path) -> Path:
    """A searcher's study: every trial its own lr (log-uniform), K from a choice."""
    study = make_study(root, Spec(study="sampled", ks=(1, 10, 100, INF), seeds=(0, 1, 2),
                                  plain=(), probe=False))  # fmt: skip
    results = study / "results"
    trials = pd.read_parquet(results / "trials.parquet")
    lrs = dict(zip(trials["trial_id"], np.geomspace(1e-3, 1.0, len(trials)), strict=True))
    for file in [results / "trials.parquet", *(results / "metrics").glob("*.parquet")]:
        rows = pd.read_parquet(file)  # rewritten with the file's own roles
        write_parquet(rows.assign(lr=rows["trial_id"].map(lrs)), file, pq.read_schema(file))
    return study


def test_a_sampled_study_gets_one_scatter_page_not_a_page_of_singletons(tmp_path: Path, full_data):
    from reports._plot_updates import plot_feature_updates, sampled_key

    trials = reports.load_trials(_sampled_study(tmp_path))
    assert sampled_key(trials) == "lr"
    assert sampled_key(full_data.trials) is None  # a grid: groups, as before
    files = plot_feature_updates(trials, tmp_path / "out" / "feature_updates")
    assert [f.name for f in files] == ["feature_updates.png"]
    assert matplotlib.image.imread(files[0]).shape[1] > 800


def test_a_rewritten_report_leaves_no_stale_page(tmp_path: Path):
    study = make_study(tmp_path, Spec(study="stale", ks=(1, 10, INF), seeds=(0, 1), plain=(),
                                      probe=False))  # fmt: skip
    out = tmp_path / "report"
    out.mkdir()
    stale = [out / "feature_updates_7.png", out / "damping.png", out / "damping_2.svg"]
    kept = [out / "notes.md", out / "feature_updates_draft.png", out / "damping.jpg"]
    for path in stale + kept:
        path.write_text("old")
    # the figure with a stale page drawn, and one skipped for its own reason
    result = reports.write_report(study, out, n_boot=0, figures=["feature_updates", "damping"])
    assert result.skipped["damping"] != NOT_REQUESTED and result.figures["feature_updates"]
    assert not any(p.exists() for p in stale)
    assert all(p.read_text() == "old" for p in kept)


def test_only_the_requested_figures_are_drawn_and_older_pages_of_the_rest_go(tmp_path: Path):
    study = make_study(tmp_path, Spec(study="some", ks=(1, 10, INF), seeds=(0, 1), plain=(),
                                      probe=False, lrs=(0.05, 0.1)))  # fmt: skip
    out = tmp_path / "report"
    first = reports.write_report(study, out, n_boot=0, figures=["feature_updates", "stability_map"])
    assert first.figures["feature_updates"] and first.figures["stability_map"]
    result = reports.write_report(
        study, out, n_boot=0, figures=["matched_train_loss", "stability_map"]
    )
    assert set(result.figures) == {"matched_train_loss", "stability_map"}
    assert set(result.figures) | set(result.skipped) == set(reports._config.FIGURES)
    assert result.skipped["feature_updates"] == "not requested"
    assert not (out / "feature_updates.png").exists()  # no page of the first report is left
    assert (out / "stability.csv").is_file()  # the map came, and its table with it
    assert (out / "fits.csv").is_file() and "not requested" in result.summary.read_text()
    tables_only = reports.write_report(study, out, n_boot=0, figures=())
    assert not tables_only.figures and not list(out.glob("*.png"))
    assert not (out / "stability.csv").exists()  # a figure's table comes only with it
    assert len(tables_only.fits) == len(first.fits)  # the fits do not depend on the figures
    with pytest.raises(reports.ReportError, match="unknown figure 'histogram'"):
        reports.write_report(study, out, figures=["lr", "histogram"])


def test_metrics_files_of_different_layouts_join_as_pandas_would_join_them():
    """Arrow joins the trial files before one conversion; the frame is the one that converting
    each file and ``pd.concat`` give, columns a file lacks included."""
    from reports._load import _joined_frame

    new = pa.table({"trial_id": ["a", "a"], "step": [0, 10], "test_acc": [0.1, 0.5],
                    "diverged": [False, True], "val_examples": [200, 200],
                    "note": ["x", None]})  # fmt: skip
    old = pa.table({"trial_id": ["b"], "step": pa.array([0], pa.int32()), "test_acc": [0.2]})
    empty_col = pa.table({"trial_id": ["c"], "step": [0], "test_acc": pa.nulls(1, pa.float64()),
                          "note": pa.nulls(1)})  # fmt: skip
    for tables in ([new, old, empty_col], [old, new], [empty_col, new]):
        want = pd.concat([t.to_pandas() for t in tables], ignore_index=True, sort=False)
        got = _joined_frame(tables)
        assert list(got.columns) == list(want.columns)
        assert got["test_acc"].dtype == want["test_acc"].dtype == np.float64
        for column in got.columns:  # a text column null in one file stays text, not object
            if not (want[column].dtype == object and pd.api.types.is_string_dtype(got[column])):
                assert got[column].dtype == want[column].dtype, column
        pd.testing.assert_frame_equal(got.astype(object).where(got.notna(), None),
                                      want.astype(object).where(want.notna(), None))  # fmt: skip
