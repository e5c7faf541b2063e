"""reports: issue 21's stability figure, the K × lr stability map, the divergence classes, and the
Fig. 8 arms figure.

The studies are written here, record by record, with the stability measures (``sharpness``,
``lr_sharpness``, ``lr_sharpness_max``, ``lin_gap``) and a ``results/phases/`` folder, so every
expected number comes from the generator's own parameters, not from the report.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

import reports
from reports._errors import ReportError
from reports._stability import (
    BOTH_CLASS,
    EDGE_CLASS,
    GAP_CLASS,
    GAP_FRACTION,
    NEITHER_CLASS,
    UNMEASURED_CLASS,
    classify,
)
from study.store.layout import METRICS_SCHEMA, PHASES_SCHEMA, TRIALS_SCHEMA
from tests.reports.report_data import BASE_CONFIG, INF, PROVENANCE, Spec, make_study, write_parquet

T, EVERY = 100, 10
INITIAL_LOSS = 2.3


METRICS, TRIALS, PHASES = METRICS_SCHEMA, TRIALS_SCHEMA, PHASES_SCHEMA


@dataclass
class Trial:
    """One synthetic trial: its config, where it diverges, and its curvature and gaps."""

    k: float
    lr: float
    seed: int
    trainer: str = "linearised"
    optimizer: str = "sgd"
    diverge_at: int | None = None  # the step of the diverged record
    lam: Callable[[int], float] = lambda step: 5.0  # λ_max at a step
    gaps: Callable[[int], float] = lambda j: 0.01  # lin_gap at the j-th feature update
    val_acc: float = 0.8
    test_acc: float = 0.79
    train_acc: float = 0.9
    updates: int | None = None  # final feature updates (solve-to-convergence), else ⌈T/K⌉ − 1
    extra: dict = field(default_factory=dict)
    phases: bool = True  # write a phases file
    loss: Callable[[int], float] | None = None  # training loss at a record (default: decays)
    before: Callable[[int], float] = lambda j: 0.2  # linear model's loss before update j
    measured: Callable[[int], bool] = lambda j: True  # whether update j was measured


def write_study(root: Path, name: str, trials: list[Trial], phases: bool = True) -> Path:
    """A study folder in the results layout, with the stability measures and phases files."""
    study = root / name
    (study / "results" / "metrics").mkdir(parents=True)
    if phases:
        (study / "results" / "phases").mkdir()
    last_rows = []
    for i, spec in enumerate(trials):
        trial_id = f"{name}_{i:05d}"
        rows, phase_rows = _records(spec)
        config = _config(spec)
        frame = pd.DataFrame([{"study": name, "trial_id": trial_id, **config, **r, **PROVENANCE}
                              for r in rows])  # fmt: skip
        write_parquet(frame, study / "results" / "metrics" / f"{trial_id}.parquet", METRICS)
        if phases and spec.phases and phase_rows:
            ph = pd.DataFrame([{"study": name, "trial_id": trial_id, **config, **r}
                               for r in phase_rows])  # fmt: skip
            write_parquet(ph, study / "results" / "phases" / f"{trial_id}.parquet", PHASES)
        status = "DIVERGED" if spec.diverge_at is not None else "TERMINATED"
        last = frame.iloc[-1].to_dict() | {"status": status, "wall_s": 1.0}
        last_rows.append({k: v for k, v in last.items() if k not in ("step", "elapsed_s")})
    write_parquet(pd.DataFrame(last_rows), study / "results" / "trials.parquet", TRIALS)
    return study


def _config(spec: Trial) -> dict:
    cfg = {**BASE_CONFIG, "trainer": spec.trainer, "optimizer": spec.optimizer, "lr": spec.lr,
           "k": float(spec.k), "total_steps": T, "seed": spec.seed, "eval_every": EVERY,
           "solve_to_convergence": False, **spec.extra}  # fmt: skip
    return cfg


def _updates_at(spec: Trial, step: int) -> int:
    if spec.updates is not None:  # solve to convergence: spread evenly over training
        return int(spec.updates * step // T)
    if math.isinf(spec.k) or step == 0:
        return 0
    return math.ceil(step / spec.k) - 1


def _records(spec: Trial) -> tuple[list[dict], list[dict]]:
    end = spec.diverge_at if spec.diverge_at is not None else T
    sgd = spec.optimizer == "sgd" and spec.trainer != "gauss_newton"
    lin = spec.trainer == "linearised" and spec.updates is None
    update_steps = [] if not lin or math.isinf(spec.k) else list(range(int(spec.k), T, int(spec.k)))
    rows, prev = [], 0
    for step in range(0, end + 1, EVERY):
        progress = step / T
        between = [lr_lam for s in range(prev + 1, step + 1)
                   for lr_lam in [spec.lr * spec.lam(s)]] or [spec.lr * spec.lam(step)]  # fmt: skip
        done = [j for j, s in enumerate(update_steps, start=1) if s < step and spec.measured(j)]
        row = {
            "step": step, "feature_updates": _updates_at(spec, step),
            "train_loss": spec.loss(step) if spec.loss else INITIAL_LOSS * math.exp(-step / 50),
            "test_loss": 0.5,
            "train_acc": 0.1 + (spec.train_acc - 0.1) * progress,
            "test_acc": 0.1 + (spec.test_acc - 0.1) * progress,
            "val_acc": 0.1 + (spec.val_acc - 0.1) * progress, "val_loss": 0.5,
            "diverged": False, "elapsed_s": 0.01 * step,
            "sharpness": spec.lam(step),
            "lr_sharpness": spec.lr * spec.lam(step) if sgd else math.nan,
            "lr_sharpness_max": max(between) if sgd else math.nan,
            "lin_gap": spec.gaps(done[-1]) if done else math.nan,
        }  # fmt: skip
        if step == end and spec.diverge_at is not None:
            row |= {"diverged": True, "train_loss": math.inf, "test_loss": math.nan}
        rows.append(row)
        prev = step
    phase_rows = []
    if lin:
        for j, step in enumerate([0, *update_steps]):
            if step > end:
                break
            if not spec.measured(j):
                continue
            phase_rows.append({
                "step": step, "feature_updates": j, "sharpness": spec.lam(step),
                "lr_sharpness": spec.lr * spec.lam(step) if sgd else math.nan,
                "lin_gap": spec.gaps(j) if j else math.nan,
                "loss_before": spec.before(j) if j else math.nan,
                "loss_after": spec.before(j) + (spec.gaps(j) if j else 0.0),
            })  # fmt: skip
    return rows, phase_rows


# ---- the K × lr study -----------------------------------------------------------------------
KS, LRS, SEEDS = (1, 10, 25, INF), (0.05, 0.1, 0.2), (0, 1, 2)


def val_of(k: float, lr: float, seed: int) -> float:
    """Final validation accuracy: best at lr 0.1 everywhere, K=1 a little ahead."""
    return 0.8 + 0.03 * (lr == 0.1) + 0.01 * (k == 1) + 0.002 * seed


def grid_trials() -> list[Trial]:
    out = []
    for k in KS:
        for lr in LRS:
            for seed in SEEDS:
                t = Trial(k=k, lr=lr, seed=seed, val_acc=val_of(k, lr, seed))
                if k == 1 and lr == 0.2:  # SGD at the edge of stability, and it trains
                    t.lam = lambda step: 12.0
                if k == 10 and lr == 0.2:  # curvature rises through the edge: lr·λ = 2 at 20
                    t.diverge_at, t.lam = 50, (lambda step: 8.0 + 0.1 * step)
                    if seed == 2:  # …and a big jump at the last update before it: both
                        t.gaps = lambda j: 0.01 if j < 4 else 3.0
                if k == 25 and lr == 0.2:  # lr·λ = 1 but the network jumps at the update at 50
                    t.diverge_at, t.gaps = 60, (lambda j: 0.1 if j < 2 else 5.0)
                if k == 25 and lr == 0.1 and seed == 2:  # neither mechanism
                    t.diverge_at, t.gaps = 60, (lambda j: 0.1 * j)
                out.append(t)
    for seed in SEEDS:  # plain Adam, the reference arm; one seed diverges unexplained
        out.append(Trial(k=1, lr=0.001, seed=seed, trainer="plain", optimizer="adam",
                         lam=lambda step: 30.0, val_acc=0.84 + 0.001 * seed,
                         diverge_at=40 if seed == 2 else None))  # fmt: skip
    return out


@pytest.fixture(scope="module")
def grid_study(tmp_path_factory) -> Path:
    return write_study(tmp_path_factory.mktemp("stab"), "stab", grid_trials())


@pytest.fixture(scope="module")
def grid_report(grid_study: Path):
    return reports.write_report(grid_study, grid_study.parent / "out", n_boot=0,
                                figures=["stability", "stability_map", "arms"])  # fmt: skip


def test_the_stability_figures_and_tables_are_written(grid_report):
    for name in ("stability", "stability_map"):
        (png,) = grid_report.figures[name]
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    out = grid_report.out
    assert {out / "stability.csv", out / "stability_trials.csv"} <= set(grid_report.files)
    assert "arms" in grid_report.skipped and not (out / "arms.csv").exists()
    summary = (out / "summary.md").read_text()
    assert "](stability.png)" in summary and "](stability_map.png)" in summary
    assert "Not drawn:" in summary.split("## Stability and the Fig. 8 arms")[1]  # arms: why not


def test_the_map_holds_the_fraction_trained_and_the_mean_validation_accuracy(grid_report):
    table = pd.read_csv(grid_report.out / "stability.csv")
    lin = table[table["trainer"] == "linearised"].set_index(["k", "lr"])
    diverged = {(10, 0.2): {0, 1, 2}, (25, 0.2): {0, 1, 2}, (25, 0.1): {2}}
    for k in KS:
        for lr in LRS:
            row = lin.loc[(float(k), lr)]
            lost = diverged.get((k, lr), set())
            trained = [s for s in SEEDS if s not in lost]
            assert row["seeds"] == 3 and row["diverged"] == len(lost), (k, lr)
            assert row["fraction_trained"] == pytest.approx(len(trained) / 3)
            expected = np.mean([val_of(k, lr, s) for s in trained]) if trained else math.nan
            assert row["val_acc_mean"] == pytest.approx(expected, nan_ok=True), (k, lr)
    assert lin.loc[(25.0, 0.1), "val_acc_mean"] == pytest.approx(0.831)  # (0.830 + 0.832) / 2
    adam = table[table["trainer"] == "plain"].iloc[0]
    assert (adam["trained"], adam["seeds"]) == (2, 3)
    assert adam["val_acc_mean"] == pytest.approx(0.8405)


def test_the_map_draws_those_numbers_in_its_cells(grid_report, monkeypatch):
    from reports import _plot_stability

    texts: list[str] = []

    def keep(fig, *args, **kwargs):
        texts.extend(t.get_text() for ax in fig.axes for t in ax.texts)
        plt.close(fig)
        return []

    monkeypatch.setattr(_plot_stability, "save", keep)
    _plot_stability.plot_stability_map(grid_report.stability, "unused")
    assert "2/3\n0.831" in texts  # K=25, lr 0.1
    assert texts.count("0/3\n✕") == 2  # K=10 and K=25 at lr 0.2
    assert "2/3\n0.841" in texts  # plain Adam, the reference strip (0.840 and 0.841)


def test_divergence_steps_and_the_largest_lr_sharpness_per_cell(grid_report):
    table = grid_report.stability
    cell = table[(table["k"] == 10) & (table["lr"] == 0.2)].iloc[0]
    assert cell["divergence_steps"] == "50;50;50" and cell["first_divergence_step"] == 50
    # read up to the last healthy record (40): what the diverged record shows came after
    assert cell["max_lr_sharpness_diverged"] == pytest.approx(0.2 * (8.0 + 0.1 * 40))
    assert cell["onset_lr_sharpness_max"] == pytest.approx(0.2 * (8.0 + 0.1 * 40))
    assert cell["onset_lin_gap_rel_max"] == pytest.approx(3.0 / INITIAL_LOSS)  # seed 2's jump
    gap = table[(table["k"] == 25) & (table["lr"] == 0.2)].iloc[0]
    assert gap["max_lr_sharpness"] == pytest.approx(1.0) and gap["max_abs_lin_gap"] == 5.0
    assert gap["max_lin_gap_rel"] == pytest.approx(5.0 / INITIAL_LOSS)
    edge_sgd = table[(table["k"] == 1) & (table["lr"] == 0.2)].iloc[0]
    assert edge_sgd["max_lr_sharpness"] == pytest.approx(2.4) and edge_sgd["diverged"] == 0


def test_each_diverged_trial_is_classified_and_counted_in_the_summary(grid_report):
    per_trial = grid_report.stability_trials
    lost = per_trial[per_trial["diverged"]].set_index(["k", "lr", "seed"]).sort_index()["class"]
    assert lost.loc[(10.0, 0.2, 0)] == lost.loc[(10.0, 0.2, 1)] == EDGE_CLASS
    assert lost.loc[(10.0, 0.2, 2)] == BOTH_CLASS
    assert set(lost.loc[(25.0, 0.2)]) == {GAP_CLASS}
    assert lost.loc[(25.0, 0.1, 2)] == NEITHER_CLASS
    assert lost.loc[(1.0, 0.001, 2)] == UNMEASURED_CLASS  # Adam: no lr·λ, no feature update gap
    edge = per_trial[(per_trial["k"] == 10) & (per_trial["lr"] == 0.2)]
    assert (edge["first_edge_step"] == 20).all()  # lr·λ = 0.2 · (8 + 0.1·20) = 2
    summary = grid_report.summary.read_text()
    assert (f"Diverged trials by mechanism (8 in all): 2 {EDGE_CLASS}, 3 {GAP_CLASS}, "
            f"1 {BOTH_CLASS}, 1 {NEITHER_CLASS}, 1 {UNMEASURED_CLASS}.") in summary  # fmt: skip
    assert "K=25, lr=0.2: 3 diverged (3 feature-update gap)" in summary
    assert "3 reached lr·λ ≥ 2 at some measured point and still trained" in summary  # K=1, 0.2


@pytest.mark.parametrize(
    ("ls", "gap", "initial", "known", "expected"),
    [
        (2.0, 0.0, 2.3, False, EDGE_CLASS),  # the edge itself counts
        (1.999, 0.0, 2.3, False, NEITHER_CLASS),
        (1.0, GAP_FRACTION * 2.3, 2.3, False, GAP_CLASS),  # the bar itself counts
        (1.0, GAP_FRACTION * 2.3 - 1e-9, 2.3, False, NEITHER_CLASS),
        (3.0, 5.0, 2.3, False, BOTH_CLASS),
        (1.0, -9.0, 2.3, False, NEITHER_CLASS),  # the network better than its linear model
        (math.nan, 0.1, 2.3, False, UNMEASURED_CLASS),  # Adam: lr·λ undefined
        (math.nan, 9.0, 2.3, False, GAP_CLASS),
        (1.0, math.nan, 2.3, False, UNMEASURED_CLASS),  # a gap not recorded is not assumed small
        (1.0, math.nan, 2.3, True, NEITHER_CLASS),  # K=∞: no feature update, no gap
        (1.0, 9.0, math.nan, False, UNMEASURED_CLASS),  # no step-0 loss to scale the gap by
    ],
)
def test_the_classification_rule_on_constructed_records(ls, gap, initial, known, expected):
    assert classify(ls, gap, initial, known) == expected
    assert classify(ls, gap, initial, known, unmeasured_updates=1) == UNMEASURED_CLASS


def test_the_stability_figure_shows_the_pick_and_the_next_larger_lr(grid_study, monkeypatch):
    from reports import _plot_stability
    from reports._load import read_studies
    from reports._stability import read_phases

    data = read_studies(grid_study)
    tuning = reports.tune_on_validation(data.trials)
    pages: list = []

    def keep(fig, *args, **kwargs):
        pages.append(fig)
        return []

    monkeypatch.setattr(_plot_stability, "save", keep)
    phases = read_phases(data.dirs, data.trials)
    _plot_stability.plot_stability(data.metrics, data.trials, phases, "unused", tuning=tuning)
    axes = [ax for fig in pages for ax in fig.axes]
    titles = [ax.get_title(loc="left") for ax in axes if ax.get_title(loc="left")]
    k10 = next(t for t in titles if "K=10" in t)
    assert "0.1: 0/3 diverged; 0.2: 3/3 diverged" in k10 and "stability-limited" in k10
    k25 = next(t for t in titles if "K=25" in t)
    assert "0.05: 0/3 diverged; 0.1: 1/3 diverged" in k25  # pick 0.05: 0.1 lost a seed
    adam = next(ax for ax in axes if "plain adam" in ax.get_title(loc="left"))
    assert any("lr·λ undefined" in t.get_text() for t in adam.texts)
    edges = [
        ax for ax in axes if any(np.allclose(line.get_ydata(), 2.0) for line in ax.get_lines())
    ]
    assert len(edges) == len(KS)  # the edge on every SGD panel, none on Adam's
    stops = sum(len(c.get_offsets()) for ax in axes for c in ax.collections if c.get_offsets().size)
    assert stops == 2 * (3 + 1 + 1)  # K=10 at 0.2, K=25's seed at 0.1, Adam's: on both panels
    for fig in pages:
        plt.close(fig)


# ---- the onset of a divergence ---------------------------------------------------------------
def _late_blow_up(**changes) -> Trial:
    """K=10, lr 0.1: lr·λ = 3 at the update at 20, a loss spike at 30 that recovers, a big jump
    (lr·λ = 1) at the update at 60, the loss above its initial value from 70 on, diverged at
    80; the update at 70 comes after the linear model blew up (its loss before it is 50)."""
    lam = {20: 30.0, 70: 90.0}

    def loss(step: int) -> float:
        if step == 30:
            return 10.0
        return 50.0 if step >= 70 else INITIAL_LOSS * math.exp(-step / 50)

    spec = dict(k=10, lr=0.1, seed=0, diverge_at=80, lam=lambda step: lam.get(step, 10.0),
                loss=loss, gaps=lambda j: 5.0 if j == 6 else 0.01,
                before=lambda j: 50.0 if j == 7 else 0.2)  # fmt: skip
    return Trial(**(spec | changes))


def test_a_divergence_is_read_where_it_began(tmp_path: Path):
    study = write_study(tmp_path, "onset", [_late_blow_up(), Trial(k=INF, lr=0.1, seed=0)])
    row = reports.write_report(study, tmp_path / "out", n_boot=0, figures=()).stability_trials.iloc[
        0
    ]
    assert row["last_healthy_step"] == 60  # not 20: the spike at 30 recovered
    assert row["onset_step"] == 60 and row["onset_read_from"] == "phases"
    assert row["onset_lr_sharpness"] == pytest.approx(1.0)  # not 9: set after the blow-up
    assert row["onset_lin_gap"] == 5.0 and row["unmeasured_updates"] == 0
    assert row["class"] == GAP_CLASS
    assert row["max_lr_sharpness"] == pytest.approx(3.0)  # over what came before the onset


def test_an_update_made_after_the_linear_model_blew_up_is_not_read(tmp_path: Path):
    """The probe loss before the update at 60 is already past the initial loss: the phase that
    began at 50 diverged, and the jump at 60 is a consequence; the update at 50 is read."""
    trial = _late_blow_up(before=lambda j: 50.0 if j >= 6 else 0.2)
    study = write_study(tmp_path, "late", [trial, Trial(k=INF, lr=0.1, seed=0)])
    row = reports.write_report(study, tmp_path / "out", n_boot=0, figures=()).stability_trials.iloc[
        0
    ]
    assert row["onset_step"] == 50 and row["onset_lin_gap"] == 0.01
    assert row["unmeasured_updates"] == 0  # the update at 60 was measured: it came too late
    assert row["class"] == NEITHER_CLASS  # lr·λ = 1, a jump of 0.01


def test_a_phase_that_began_unmeasured_is_not_classified(tmp_path: Path):
    """Only the updates at 20 and 40 were measured: the phase that diverged began at 60 or 70."""
    trial = _late_blow_up(measured=lambda j: j in (2, 4))
    study = write_study(tmp_path, "cadence", [trial, Trial(k=INF, lr=0.1, seed=0)])
    row = reports.write_report(study, tmp_path / "out", n_boot=0, figures=()).stability_trials.iloc[
        0
    ]
    assert row["onset_step"] == 40 and row["unmeasured_updates"] == 2  # updates 5 and 6
    assert row["class"] == UNMEASURED_CLASS


# ---- older studies and bad input ------------------------------------------------------------
def test_a_study_without_the_measures_skips_the_figures_with_a_reason(tmp_path: Path):
    study = make_study(tmp_path, Spec(study="old", ks=(1, 10, INF), seeds=(0, 1), plain=(),
                                      probe=False))  # fmt: skip
    result = reports.write_report(study, tmp_path / "out", n_boot=0,
                                  figures=["stability", "stability_map", "arms"])  # fmt: skip
    assert "before the stability measures" in result.skipped["stability"]
    assert "more than one lr" in result.skipped["stability_map"]
    assert "solved to convergence" in result.skipped["arms"]
    assert not any((tmp_path / "out" / n).exists() for n in ("stability.csv", "arms.csv"))
    text = result.summary.read_text()
    assert "Not drawn: no sharpness or lr_sharpness columns" in text


def test_an_old_lr_grid_still_gets_its_map(tmp_path: Path):
    study = make_study(tmp_path, Spec(study="oldgrid", ks=(1, 10, INF), seeds=(0, 1), plain=(),
                                      probe=False, lrs=(0.05, 0.1)))  # fmt: skip
    result = reports.write_report(study, tmp_path / "out", n_boot=0,
                                  figures=["stability", "stability_map"])  # fmt: skip
    assert result.figures["stability_map"] and "stability" in result.skipped
    table = pd.read_csv(tmp_path / "out" / "stability.csv")
    assert len(table) == 6 and table["max_lr_sharpness"].isna().all()


def test_a_corrupt_phases_file_is_refused_before_anything_is_written(tmp_path: Path):
    study = write_study(
        tmp_path, "bad", [Trial(k=10, lr=0.1, seed=0), Trial(k=INF, lr=0.1, seed=0)]
    )
    (study / "results" / "phases" / "bad_00000.parquet").write_bytes(b"PAR1 not parquet PAR1")
    with pytest.raises(ReportError, match="not a readable Parquet file"):
        reports.write_report(study, tmp_path / "out", n_boot=0)
    assert not (tmp_path / "out").exists()


def test_without_phase_files_the_last_healthy_record_is_read(tmp_path: Path):
    trials = [Trial(k=25, lr=0.2, seed=0, diverge_at=40, gaps=lambda j: 5.0),  # jump at step 25
              Trial(k=25, lr=0.2, seed=1, diverge_at=60, gaps=lambda j: 0.1 if j < 2 else 5.0),
              Trial(k=INF, lr=0.2, seed=0)]  # fmt: skip
    study = write_study(tmp_path, "nophase", trials, phases=False)
    result = reports.write_report(study, tmp_path / "out", n_boot=0, figures=["stability"])
    per_trial = result.stability_trials.set_index(["k", "seed"])
    first = per_trial.loc[(25.0, 0)]
    assert first["class"] == GAP_CLASS and first["onset_read_from"] == "records"
    assert first["last_healthy_step"] == 30 and first["onset_lin_gap"] == 5.0
    # the update at step 50 falls between the last healthy record (50) and the onset (60): a
    # record taken at 50 predates it, so without phase rows only the earlier jump is seen
    second = per_trial.loc[(25.0, 1)]
    assert second["class"] == NEITHER_CLASS and second["onset_lin_gap"] == 0.1
    assert result.figures["stability"]


# ---- Fig. 8 arms ----------------------------------------------------------------------------
CONVERGE = {"solve_to_convergence": True}


def fig8_trials() -> list[Trial]:
    out = []
    for seed, (n_low, n_high) in enumerate([(20, 7), (22, 9), (25, 12)]):
        # IL SGD solved to convergence at two lrs; validation prefers 0.1
        out.append(Trial(k=INF, lr=0.05, seed=seed, extra=CONVERGE, updates=n_low, val_acc=0.80))
        out.append(Trial(k=INF, lr=0.1, seed=seed, extra=CONVERGE, updates=n_high,
                         val_acc=0.85, train_acc=1.0, test_acc=0.83 + 0.01 * seed))  # fmt: skip
        out.append(Trial(k=INF, lr=1e-3, seed=seed, optimizer="adam", extra=CONVERGE,
                         updates=3 + seed, train_acc=1.0, test_acc=0.78))  # fmt: skip
        out.append(Trial(k=INF, lr=1e-3, seed=seed, optimizer="adam", train_acc=0.95,
                         test_acc=0.80))  # fmt: skip
        out.append(Trial(k=1, lr=0.05, seed=seed, trainer="plain", train_acc=0.97,
                         test_acc=0.88))  # fmt: skip
        out.append(Trial(k=1, lr=1e-3, seed=seed, trainer="plain", optimizer="adam",
                         train_acc=0.99, test_acc=0.89, diverge_at=30 if seed == 2 else None))  # fmt: skip
    return out


def test_the_arms_table_counts_each_trials_feature_updates(tmp_path: Path):
    study = write_study(tmp_path, "fig8", fig8_trials())
    result = reports.write_report(study, tmp_path / "out", n_boot=0, figures=["arms"])
    (png,) = result.figures["arms"]
    assert png.stat().st_size > 20_000
    arms = pd.read_csv(tmp_path / "out" / "arms.csv")
    assert arms["arm"].nunique() == 5
    sgd = arms[arms["arm"] == "IL sgd, solved to convergence"].sort_values("seed")
    assert sgd["lr"].tolist() == [0.1] * 3 and sgd["lr_note"].eq("selected on validation").all()
    assert sgd["feature_updates"].tolist() == [7, 9, 12]  # at the selected lr, not at 0.05
    assert sgd["gap"].to_numpy() == pytest.approx([0.17, 0.16, 0.15])
    adam = arms[arms["arm"] == "IL adam, solved to convergence"].sort_values("seed")
    assert adam["feature_updates"].tolist() == [3, 4, 5]
    lazy = arms[arms["arm"] == "IL adam, K=∞"]
    assert (lazy["feature_updates"] == 0).all() and len(lazy) == 3
    plain_adam = arms[arms["arm"] == "plain adam (K=1)"]
    assert plain_adam["diverged"].tolist() == [False, False, True]
    assert "arms.csv" in result.summary.read_text()


def test_the_arms_figure_names_the_feature_updates(tmp_path: Path, monkeypatch):
    from reports import _plot_arms

    study = write_study(tmp_path, "fig8b", fig8_trials())
    table = _plot_arms.arms_table(reports.load_trials(study))
    ticks: list[str] = []

    def keep(fig, *args, **kwargs):
        ticks.extend(t.get_text().replace("\n", " ") for t in fig.axes[1].get_xticklabels())
        plt.close(fig)
        return []

    monkeypatch.setattr(_plot_arms, "save", keep)
    _plot_arms.plot_arms(table, "unused")
    sgd = next(t for t in ticks if t.startswith("IL sgd, solved"))
    assert "N = 7, 9, 12" in sgd and "lr 0.1" in sgd
    assert any("plain adam" in t and "1 diverged" in t for t in ticks)
