"""The adaptive K searcher (issue 16): its maths on known curves, in Tune, resumed, from the CLI.

The curves are known logistics in log N (the report's model), so a test can say where the
proposals belong: around the true N₅₀ and N₉₀, never below one update, never a (K, seed) twice.
"""

from __future__ import annotations

import math
import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from ray import tune

import search_spaces
from study.errors import StudyError
from study.execute.search import param_space, search_alg
from study.plan import build_plan
from study.plan.adaptive_fit import candidate_ns, k_for_n, n_of_k, snap_n
from study.plan.adaptive_planner import FINISHED, Options, Planner
from study.request.spec import StudySpec

ROOT = Path(__file__).resolve().parents[3]
T = 1000  # k_adaptive's total_steps
TRUE_N50, TRUE_SLOPE = 4.0, 2.0  # N₉₀ = N₅₀ · 9^(1/s) = 12
LEVELS, NOISE = (0.90, 0.93), 0.003
BUDGET = 14  # Tune runs: references and the coarse grid (10 trials), then two decisions


def true_acc(n: int, seed: int, n50: float = TRUE_N50, slope: float = TRUE_SLOPE) -> float:
    """The known curve plus a seed's noise, the same for the same (N, seed)."""
    mean = LEVELS[0]
    if n > 0:
        mean += (LEVELS[1] - LEVELS[0]) / (1 + math.exp(-slope * math.log(n / n50)))
    return mean + NOISE * float(np.random.default_rng([n, seed]).standard_normal())


def drive(planner: Planner, budget: int, **curve: float) -> Planner:
    """Run the planner's proposals one at a time on the known curve, as Tune would."""
    while len(planner.proposals) < budget:
        proposal = planner.next()
        if proposal == FINISHED:
            break
        assert proposal is not None, "nothing pending, yet the planner waits"
        k, seed = proposal
        planner.record(len(planner.proposals) - 1, true_acc(n_of_k(k, T), seed, **curve))
    return planner


def _plan(smoke: bool = True, **kw: Any) -> Any:
    values = {"searcher": "adaptive", "num_samples": BUDGET, "data_dir": "/tmp/ilstudy-data"}
    values.update(kw)
    return build_plan(StudySpec(space="k_adaptive", smoke=smoke, **values))


# ---- the maths, without Ray ----------------------------------------------------------------
def test_n_maps_to_the_integer_k_of_a_uniform_schedule_and_back() -> None:
    assert k_for_n(0, T) == "inf" and k_for_n(T - 1, T) == 1
    assert n_of_k("inf", T) == 0 and n_of_k(T, T) == 0 and n_of_k(1, T) == T - 1
    for n in candidate_ns(T):
        k = k_for_n(n, T)
        assert math.ceil(T / k) - 1 == n and k == math.ceil(T / (n + 1))
    with pytest.raises(ValueError, match="no integer K"):
        k_for_n(700, T)  # between K=2 (N=499) and K=1 (N=999)
    assert all(1 <= snap_n(v, T) <= 499 for v in (0.2, 1, 7.5, 300, 5000))


def test_proposals_start_from_references_replicate_seeds_and_concentrate_at_the_transition():
    planner = drive(Planner(T, Options(initial_n=(1, 3, 10, 30))), budget=40)
    ns = [p.n for p in planner.proposals]
    assert ns[:4] == [T - 1] * 2 + [0] * 2  # K=1, then K=∞, two seeds each (the default)
    assert ns[4:12] == [1] * 2 + [3] * 2 + [10] * 2 + [31] * 2  # the coarse grid (30 → K=32)
    for i in range(0, len(ns), 2):  # every point gets its seeds before the next point
        assert len(set(ns[i : i + 2])) == 1
    pairs = [(p.k, p.seed) for p in planner.proposals]
    assert len(pairs) == len(set(pairs))  # never a (K, seed) twice
    refined = [n for n in ns[12:] if 0 < n < T - 1]
    assert refined, ns
    true_n90 = TRUE_N50 * 9 ** (1 / TRUE_SLOPE)
    assert max(refined) <= 2 * true_n90, ns  # none out in the flat tail (N = 31 is not revisited)
    near = [n for n in refined if TRUE_N50 / 2 <= n <= true_n90]
    assert len(near) >= 2 / 3 * len(refined), ns  # mostly where the curve moves
    log_mean = math.exp(np.mean(np.log(refined)))
    assert TRUE_N50 / 2 <= log_mean <= TRUE_N50 * 2, refined
    fit = planner.decisions[-1].fit
    assert fit is not None and math.exp(fit["log_n50"]) == pytest.approx(TRUE_N50, rel=0.3)


def test_it_stops_when_both_cis_are_within_the_target_factor() -> None:
    planner = drive(Planner(T, Options(initial_n=(1, 3, 10, 30), target_factor=2.0)), 200)
    assert "within x2" in planner.finished and len(planner.proposals) < 200
    last = planner.decisions[-1]
    assert all(f is not None and f <= 2.0 for f in last.factors.values()), last
    assert any("stopping" in note for note in planner.notes)


def test_a_transition_below_one_update_is_said_and_not_refined() -> None:
    planner = drive(Planner(T, Options(initial_n=(1, 3, 10, 30))), 60, n50=0.2, slope=3.0)
    assert planner.finished == "the transition lies below one feature update"
    assert any("N50" in note and "below one feature update" in note for note in planner.notes)
    assert len(planner.proposals) < 60 and min(p.n for p in planner.proposals if p.n) == 1


def test_a_restored_planner_proposes_what_an_unbroken_one_would() -> None:
    unbroken = drive(Planner(T, Options()), 36)
    first = drive(Planner(T, Options()), 22)
    state = pickle.loads(pickle.dumps(first.state()))
    resumed = drive(Planner.from_state(state), 36)
    assert [(p.k, p.seed) for p in resumed.proposals] == [(p.k, p.seed) for p in unbroken.proposals]
    assert resumed.decisions == unbroken.decisions


def test_the_searcher_saves_and_restores_its_state(tmp_path: Path) -> None:
    """Searcher.save / restore, as Tune calls them with each experiment snapshot."""
    from study.execute.adaptive_searcher import make_searcher

    plan = _plan(smoke=False)
    a, b = make_searcher(plan), make_searcher(plan)
    a.set_search_properties("val_acc", "max", {})
    for i in range(7):
        config = a.suggest(f"t{i}")
        a.on_trial_complete(f"t{i}", {"val_acc": true_acc(n_of_k(config["k"], T), i)})
    a.save(str(tmp_path / "state.pkl"))
    b.restore(str(tmp_path / "state.pkl"))
    assert b.get_state() == a.get_state()
    assert b.suggest("t7") == a.suggest("t7")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"trainer": "gauss_newton", "k": 1}, "k is fixed"),
        ({"schedule": "geometric"}, "schedule=geometric"),
        ({"lr": [0.05, 0.1]}, "fix lr with --set"),
    ],
)
def test_spaces_it_cannot_serve_are_refused_in_one_line(overrides: dict, message: str) -> None:
    import dataclasses

    from study.plan.adaptive_planner import check_space

    space = search_spaces.get("k_adaptive")
    grid = {k: v for k, v in overrides.items() if isinstance(v, list)}
    fixed = {k: v for k, v in overrides.items() if not isinstance(v, list)}
    space = dataclasses.replace(space, fixed={**space.fixed, **fixed}, grid={**space.grid, **grid})
    with pytest.raises(StudyError, match=message) as err:
        check_space(space)
    assert "\n" not in str(err.value)
    with pytest.raises(StudyError, match="selects on the test set"):
        check_space(dataclasses.replace(search_spaces.get("k_adaptive"), metric="test_acc"))


def test_the_plan_refuses_before_anything_runs() -> None:
    with pytest.raises(StudyError, match="schedule=geometric; N = ceil"):
        _plan(smoke=False, overrides={"schedule": "geometric"})


# ---- in Tune, on the shared Ray ------------------------------------------------------------
def adaptive_fake_trial(config: dict) -> None:
    """A trainable whose val_acc is the known curve at its K's N (registered by this name)."""
    n = n_of_k(config["k"], config["total_steps"])
    value = true_acc(n, config["seed"], n50=config.get("true_n50", TRUE_N50))
    tune.report({"val_acc": value, "test_acc": value, "diverged": False})


class InterruptAfter(tune.Callback):
    """Sends this process SIGUSR1 (Tune's graceful stop) once `after` trials have finished."""

    def __init__(self, flag: Path, after: int) -> None:
        self.flag, self.after = flag, after

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        done = sum(t.status == "TERMINATED" for t in trials)
        if done >= self.after and not self.flag.exists():
            self.flag.write_text(str(done))
            os.kill(os.getpid(), signal.SIGUSR1)


def _tuner(plan: Any, storage: Path, name: str, callbacks: list, **extra: Any) -> Any:
    return tune.Tuner(
        adaptive_fake_trial,
        param_space={**param_space(plan), "total_steps": T, **extra},
        tune_config=tune.TuneConfig(
            metric=plan.metric,
            mode=plan.mode,
            search_alg=search_alg(plan),
            num_samples=plan.tune_num_samples,
            max_concurrent_trials=2,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=name, storage_path=str(storage), callbacks=callbacks, verbose=0
        ),
    )


def _proposed(experiment: Path) -> list[tuple[Any, int]]:
    """(K, seed) in proposal order, from the latest saved searcher state."""
    import pyarrow.fs as pafs

    from study.execute.adaptive_searcher import saved_planner

    planner = saved_planner(pafs.LocalFileSystem(), str(experiment))
    assert planner is not None
    return [(p["k"], p["seed"]) for p in planner["proposals"]]


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_in_tune_an_interrupted_study_resumes_to_what_an_unbroken_one_proposes(
    ray_session: Any, storage: Path, tmp_path: Path
) -> None:
    plan = _plan(smoke=False)
    unbroken = drive(Planner(T, make_options(plan)), BUDGET)
    expected = [(p.k, p.seed) for p in unbroken.proposals]

    flag = tmp_path / "interrupted"
    _tuner(plan, storage, "adaptive", [InterruptAfter(flag, after=8)]).fit()
    assert flag.exists()
    experiment = storage / "adaptive"
    before = _proposed(experiment)
    assert 8 <= len(before) <= 10 and before == expected[: len(before)]  # still the grid

    restored = tune.Tuner.restore(str(experiment), trainable=adaptive_fake_trial,
                                  resume_unfinished=True)  # fmt: skip
    results = restored.fit()
    assert _proposed(experiment) == expected
    frame = results.get_dataframe()
    ran = sorted(
        (str(k), int(s)) for k, s in zip(frame["config/k"], frame["config/seed"], strict=True)
    )
    assert ran == sorted((str(k), s) for k, s in expected)  # each proposal ran once


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_in_tune_the_searcher_ends_the_study_when_the_transition_lies_below_one_update(
    ray_session: Any, storage: Path
) -> None:
    import pyarrow.fs as pafs

    from study.execute.adaptive_searcher import stopped_at

    plan = _plan(smoke=False, num_samples=30)
    results = _tuner(plan, storage, "below_one", [], true_n50=0.2).fit()
    done = stopped_at(pafs.LocalFileSystem(), str(storage / "below_one"))
    assert done == len(results) == 10  # references and the coarse grid, then the stop
    assert not results.errors


def make_options(plan: Any) -> Options:
    from study.plan.adaptive_planner import check_space

    return check_space(plan.space)[1]


# ---- from the CLI ----------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.timeout(300)
def test_the_cli_runs_k_adaptive_smoke_in_process_and_with_address(
    ray_session: Any, storage: Path
) -> None:
    from study.run import main

    argv = ["--space", "k_adaptive", "--smoke", "--num-samples", "4", "--storage", str(storage)]
    assert main(argv) == 0  # the study's default Ray (here the shared instance)
    trials = pd.read_parquet(storage / "k_adaptive" / "results" / "trials.parquet")
    assert len(trials) == 4 and set(trials["status"]) == {"TERMINATED"}
    pairs = {(float(k), int(s)) for k, s in zip(trials["k"], trials["seed"], strict=True)}
    assert pairs == {(1.0, 0), (1.0, 1), (math.inf, 0), (math.inf, 1)}  # K=1, then K=∞

    address = ray_session.get_runtime_context().gcs_address
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    done = subprocess.run(
        [sys.executable, "-m", "study.run", *argv[:-1], str(storage), "--name", "attached",
         "--address", address],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    attached = pd.read_parquet(storage / "attached" / "results" / "trials.parquet")
    assert len(attached) == 4 and set(attached["status"]) == {"TERMINATED"}


def test_a_searcher_that_stopped_early_says_how_many_trials_its_study_has(tmp_path: Path):
    """The service counts an adaptive study finished at the searcher's stop, not num_samples."""
    import pyarrow.fs as pafs

    from study.execute.adaptive_searcher import make_searcher, stopped_at

    fs = pafs.LocalFileSystem()
    assert stopped_at(fs, str(tmp_path)) is None  # no state saved yet
    searcher = make_searcher(_plan(smoke=False))
    searcher.set_search_properties("val_acc", "max", {})
    searcher.save(str(tmp_path / "searcher-state-2026-01-01_00-00-00.pkl"))
    assert stopped_at(fs, str(tmp_path)) is None  # still running
    searcher.planner = drive(searcher.planner, 200, n50=0.2, slope=3.0)  # stops below one
    searcher.save(str(tmp_path / "searcher-state-2026-01-01_00-00-01.pkl"))
    assert stopped_at(fs, str(tmp_path)) == len(searcher.planner.proposals) < 200


# ---- the report's figure -------------------------------------------------------------------
def test_the_report_draws_adaptive_points_in_proposal_order(tmp_path: Path) -> None:
    import reports
    from reports._errors import NothingToPlot
    from reports._plot_adaptive import adaptive_groups, plot_adaptive
    from study.store.layout import TRIALS_SCHEMA
    from tests.reports.report_data import make_study, write_parquet

    grid = make_study(tmp_path / "grid", ks=(1, 3, 10, 30, math.inf), seeds=(0, 1, 2),
                      plain=(), probe=False)  # fmt: skip
    with pytest.raises(NothingToPlot, match="no adaptively placed K"):
        plot_adaptive(reports.load_trials(grid), tmp_path / "none")
    # the same trials, one K with fewer seeds (not a grid), started in a known order
    study = make_study(tmp_path / "adaptive", ks=(1, 3, 10, 30, math.inf), seeds=(0, 1, 2),
                       plain=(), probe=False)  # fmt: skip
    table_path = study / "results" / "trials.parquet"
    table = pd.read_parquet(table_path)
    drop = table[(table["k"] == 30) & (table["seed"] == 2)]
    for trial in drop["trial_id"]:
        (study / "results" / "metrics" / f"{trial}.parquet").unlink()
    table = table.drop(drop.index).reset_index(drop=True)
    order = np.random.default_rng(0).permutation(len(table))
    table["started_at"] = pd.Timestamp("2026-01-01") + pd.to_timedelta(order, unit="s")
    write_parquet(table, table_path, TRIALS_SCHEMA)
    trials = reports.load_trials(study)
    assert len(adaptive_groups(trials)) == 1
    written = plot_adaptive(trials, tmp_path / "adaptive_k")
    assert written and all(p.is_file() and p.stat().st_size > 0 for p in written)
