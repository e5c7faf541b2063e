"""ASHA through the study service: one race per (K, seed), STOPPED trials with their rows,
refusals where early stopping would be unfair, and a resume that keeps the races."""

from __future__ import annotations

import io
import os
import pickle
import signal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest
from ray import tune
from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler

import reports
from study.errors import StudyError
from study.execute.asha import ACTIVE, CellASHA, SlotVariants
from study.plan.schedulers import cell_sizes, check_scheduler, planned_configs, records_per_trial
from study.service import EXIT_INTERRUPTED, StudyOptions, prepare, run_study

SPACE = """\
description = "ASHA within each K: a good and a hopeless learning rate"
metric = "val_acc"
[fixed]
dataset = "digits"
trainer = "linearised"
optimizer = "sgd"
total_steps = 40
eval_every = 4
[grid]
k = [1, inf]
lr = [0.3, 0.0003]
seed = [0]
"""


def _trial(trial_id: str, k: float, lr: float, seed: int = 0) -> Any:
    config = {"k": k, "lr": lr, "seed": seed, "total_steps": 40, "eval_every": 4}
    return SimpleNamespace(trial_id=trial_id, config=config, status="PENDING", last_result={})


def _feed(scheduler: Any, trial: Any, values: list[float], start: int = 1) -> str:
    """Report `values` as val_acc at iterations start, start+1, ...; the decision that ended
    the feed (STOP or PAUSE), or the last one."""
    decision = TrialScheduler.CONTINUE
    for it, value in enumerate(values, start=start):
        decision = scheduler.on_trial_result(
            None, trial, {"training_iteration": it, "val_acc": value}
        )
        if decision in (TrialScheduler.STOP, TrialScheduler.PAUSE):
            break
    return decision


def _cells(*trials: Any) -> dict[tuple, int]:
    return cell_sizes(t.config for t in trials)


def test_one_race_per_k_never_stops_a_slow_k_for_being_slower_than_another_k() -> None:
    """K=∞ learns slower than K=1 at every record. Study-wide ASHA stops it; ours does not,
    and still stops the worse learning rate inside each K."""
    fast, slow = [0.5, 0.8, 0.9, 0.95], [0.2, 0.3, 0.4, 0.5]
    worse = [v - 0.1 for v in slow]
    trials = [_trial("a", 1.0, 0.1), _trial("b", float("inf"), 0.1), _trial("c", float("inf"), 1.0)]

    global_asha = AsyncHyperBandScheduler(
        time_attr="training_iteration", metric="val_acc", mode="max", max_t=11,
        grace_period=2, reduction_factor=2, brackets=1,
    )  # fmt: skip
    for t in trials:
        global_asha.on_trial_add(None, t)
    assert _feed(global_asha, trials[0], fast) == TrialScheduler.CONTINUE
    assert _feed(global_asha, trials[1], slow) == TrialScheduler.STOP  # the unfair stop

    cells = CellASHA(grace_period=2, reduction_factor=2, cell_sizes=_cells(*trials))
    cells.set_search_properties("val_acc", "max")
    for t in trials:
        cells.on_trial_add(None, t)
    assert _feed(cells, trials[0], fast) == TrialScheduler.CONTINUE  # alone in its race
    assert _feed(cells, trials[1], slow) == TrialScheduler.PAUSE  # waits for K=∞'s other lr
    assert _feed(cells, trials[2], worse) == TrialScheduler.STOP  # the race inside K=∞
    assert _feed(cells, trials[1], slow[1:], start=2) == TrialScheduler.CONTINUE


def _race_outcome(order: list[int], concurrent: int) -> set[float]:
    """The lrs one cell's race stops when Tune lists its five lrs in `order` and runs
    `concurrent` at once: CellASHA picks the trials to run, running ones report a record
    each in turn, a paused one waits until CellASHA picks it again."""
    curves = {  # val_acc per record of each lr; 0.0003 stays near chance
        0.3: [0.1, 0.5, 0.7, 0.8, 0.85, 0.9, 0.9, 0.92, 0.93, 0.94, 0.95],
        0.1: [0.1, 0.4, 0.6, 0.7, 0.8, 0.85, 0.88, 0.9, 0.91, 0.92, 0.93],
        0.03: [0.1, 0.3, 0.5, 0.6, 0.7, 0.75, 0.8, 0.82, 0.84, 0.86, 0.88],
        0.01: [0.1, 0.3, 0.4, 0.5, 0.55, 0.6, 0.65, 0.7, 0.72, 0.74, 0.76],
        0.0003: [0.1, 0.1, 0.11, 0.1, 0.12, 0.11, 0.1, 0.12, 0.11, 0.1, 0.12],
    }
    trials = [_trial(f"t{i}", 1.0, list(curves)[i]) for i in order]
    sched = CellASHA(grace_period=2, reduction_factor=2, cell_sizes=_cells(*trials),
                     max_concurrent=concurrent)  # fmt: skip
    sched.set_search_properties("val_acc", "max")
    controller = _Controller(trials)
    for t in trials:
        sched.on_trial_add(controller, t)
    at = {t.trial_id: 0 for t in trials}  # records reported so far
    turn = 0
    while any(t.status != "TERMINATED" for t in trials):
        chosen = sched.choose_trial_to_run(controller)
        if chosen is not None:
            chosen.status = "RUNNING"
            continue
        running = [t for t in trials if t.status == "RUNNING"]
        assert running, "every trial waits: deadlock"
        t = running[turn % len(running)]
        turn += 1
        at[t.trial_id] += 1
        it = at[t.trial_id]
        result = {"training_iteration": it, "val_acc": curves[t.config["lr"]][it - 1]}
        t.last_result = result
        decision = sched.on_trial_result(controller, t, result)
        if decision == TrialScheduler.STOP:
            result["done"] = True
            t.status = "TERMINATED"
        elif decision == TrialScheduler.PAUSE:
            t.status = "PAUSED"
        elif it == 11:
            t.status = "TERMINATED"
            sched.on_trial_complete(controller, t, result)
    return {t.config["lr"] for t in trials if t.last_result.get("done")}


def test_what_the_race_stops_depends_neither_on_the_listing_order_nor_on_concurrency() -> None:
    outcomes = {
        (tuple(order), concurrent): _race_outcome(order, concurrent)
        for order in ([0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [2, 0, 4, 1, 3])
        for concurrent in (1, 2, 5)
    }
    first = next(iter(outcomes.values()))
    assert all(o == first for o in outcomes.values()), outcomes
    assert 0.0003 in first  # the lr that stays near chance loses its race
    assert 0.3 not in first and len(first) >= 2


def test_ties_go_to_the_smaller_learning_rate_and_nan_ranks_last() -> None:
    a, b, c = _trial("a", 1.0, 0.2), _trial("b", 1.0, 0.1), _trial("c", 1.0, 0.05)
    sched = CellASHA(grace_period=1, reduction_factor=3, cell_sizes=_cells(a, b, c))
    sched.set_search_properties("val_acc", "max")
    assert _feed(sched, a, [0.5]) == TrialScheduler.PAUSE
    assert _feed(sched, c, [float("nan")]) == TrialScheduler.PAUSE
    assert _feed(sched, b, [0.5]) == TrialScheduler.CONTINUE  # ties a, lr 0.1 < 0.2
    assert _feed(sched, a, [0.5]) == TrialScheduler.STOP
    assert _feed(sched, c, [float("nan")]) == TrialScheduler.STOP


class _Controller:
    """What CellASHA uses of Tune's controller: the trials and stop_trial."""

    def __init__(self, trials: list[Any]) -> None:
        self.trials = trials

    def get_trials(self) -> list[Any]:
        return self.trials

    def stop_trial(self, trial: Any) -> None:
        trial.status = "TERMINATED"


def test_the_scheduler_holds_max_concurrent_and_runs_pending_trials_before_waiting_ones() -> None:
    a, b, c = _trial("a", 1.0, 0.3), _trial("b", 1.0, 0.0003), _trial("c", 1.0, 0.1)
    sched = CellASHA(grace_period=2, reduction_factor=3, cell_sizes=_cells(a, b, c),
                     max_concurrent=1)  # fmt: skip
    sched.set_search_properties("val_acc", "max")
    controller = _Controller([a, b, c])
    a.status = "RUNNING"
    assert sched.choose_trial_to_run(controller) is None  # one runs already
    assert _feed(sched, a, [0.1, 0.6]) == TrialScheduler.PAUSE
    a.status = "PAUSED"
    assert sched.choose_trial_to_run(controller) is b  # a waits for the rest of its cell
    b.status = "RUNNING"
    assert _feed(sched, b, [0.1, 0.1]) == TrialScheduler.PAUSE
    b.status = "PAUSED"
    assert sched.choose_trial_to_run(controller) is c
    c.status = "RUNNING"
    assert _feed(sched, c, [0.1, 0.5]) == TrialScheduler.STOP  # 3 at the rung, 1 goes on
    c.status = "TERMINATED"
    assert sched.choose_trial_to_run(controller) is a  # the winner continues
    assert b.status == "TERMINATED" and b.last_result["done"]  # stopped as at its rung


def test_a_rung_that_cannot_complete_is_judged_when_nothing_else_can_run() -> None:
    """A cell planned larger than it turned out (or a searcher whose trials are not known):
    rather than wait for ever, the rung is judged with the trials it has."""
    a, b = _trial("a", 1.0, 0.3), _trial("b", 1.0, 0.0003)
    sched = CellASHA(grace_period=2, reduction_factor=2, cell_sizes={k: 3 for k in _cells(a)})
    sched.set_search_properties("val_acc", "max")
    assert _feed(sched, a, [0.1, 0.6]) == TrialScheduler.PAUSE
    assert _feed(sched, b, [0.1, 0.1]) == TrialScheduler.PAUSE
    a.status = b.status = "PAUSED"
    controller = _Controller([a, b])
    assert sched.choose_trial_to_run(controller) is a
    assert b.status == "TERMINATED"


def test_the_races_are_kept_on_disk_and_a_new_scheduler_continues_them(tmp_path: Path) -> None:
    """A scheduler built afresh (as Tune's restore does) decides as the unbroken one would."""
    import pyarrow.fs as pafs

    where = (pafs.LocalFileSystem(), str(tmp_path / "scheduler.pkl"))
    good, bad = _trial("g", 1.0, 0.1), _trial("b", 1.0, 1.0)
    sizes = _cells(good, bad)
    first = CellASHA(grace_period=2, reduction_factor=2, state=where, cell_sizes=sizes)
    first.set_search_properties("val_acc", "max")
    first.on_trial_add(None, good)
    assert _feed(first, good, [0.5, 0.8, 0.9]) == TrialScheduler.PAUSE
    assert (tmp_path / "scheduler.pkl").exists()

    again = CellASHA(grace_period=2, reduction_factor=2, state=where, cell_sizes=sizes)
    again.set_search_properties("val_acc", "max")
    again.on_trial_add(None, bad)
    assert _feed(again, bad, [0.1, 0.2]) == TrialScheduler.STOP
    forgetful = CellASHA(grace_period=2, reduction_factor=2, cell_sizes=sizes)  # no state
    forgetful.set_search_properties("val_acc", "max")
    forgetful.on_trial_add(None, bad)
    assert _feed(forgetful, bad, [0.1, 0.2]) == TrialScheduler.PAUSE  # waits for g again


def test_the_asynchronous_races_of_an_earlier_version_are_refused_naming_the_file(
    tmp_path: Path,
) -> None:
    import pyarrow.fs as pafs

    path = tmp_path / "scheduler.pkl"
    path.write_bytes(pickle.dumps({"version": 1, "races": {}, "cell_of": {}}))
    sched = CellASHA(state=(pafs.LocalFileSystem(), str(path)))
    with pytest.raises(StudyError, match=r"scheduler\.pkl.*asynchronous"):
        sched.on_trial_add(None, _trial("a", 1.0, 0.1))


def test_a_grid_plan_gives_every_race_its_size(storage: Path) -> None:
    """k_sweep: every (K, seed) cell races its 6 lrs; the Adam reference arm its 3."""
    prepared = prepare(StudyOptions(space="k_sweep", storage=str(storage)))
    configs = planned_configs(prepared.plan)
    assert configs is not None and len(configs) == prepared.plan.total_trials
    sizes = cell_sizes(configs)
    assert sum(sizes.values()) == prepared.plan.total_trials
    assert sorted(set(sizes.values())) == [3, 6]
    assert list(storage.iterdir()) == []


def test_records_per_trial_counts_step_zero_and_a_last_partial_interval() -> None:
    assert records_per_trial({"total_steps": 40, "eval_every": 4}) == 11
    assert records_per_trial({"total_steps": 42, "eval_every": 4}) == 12


@pytest.mark.parametrize(
    ("metric", "swept", "needle"),
    [
        ("test_acc", ["k", "lr"], "validation metric"),
        ("val_acc", ["k", "seed"], "does not sweep it"),
    ],
)
def test_an_unfair_scheduler_is_refused(metric: str, swept: list[str], needle: str) -> None:
    with pytest.raises(StudyError, match=needle):
        check_scheduler("asha", metric, swept, 0, 3.0)


def test_asha_on_a_space_ranked_by_test_accuracy_is_refused_before_anything_is_written(
    storage: Path, tmp_path: Path
) -> None:
    space = tmp_path / "on_test.toml"
    space.write_text(SPACE.replace('metric = "val_acc"', 'metric = "test_acc"'))
    with pytest.raises(StudyError, match="validation metric"):
        prepare(StudyOptions(space=str(space), storage=str(storage), scheduler="asha"))
    assert list(storage.iterdir()) == []


class InterruptAfter(tune.Callback):
    """SIGUSR1 (Tune's graceful stop) once `after` trials ended; "once" lives in a file."""

    def __init__(self, flag: Path, after: int) -> None:
        self.flag, self.after = str(flag), after

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        done = sum(t.status == "TERMINATED" for t in trials)
        if done >= self.after and not os.path.exists(self.flag):
            Path(self.flag).write_text("1")
            os.kill(os.getpid(), signal.SIGUSR1)


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_asha_study_stops_the_losing_lr_in_each_k_keeps_its_rows_and_resumes_its_races(
    ray_session: Any, storage: Path, tmp_path: Path
) -> None:
    """The good learning rate of each K runs first; the driver is interrupted; the resumed
    study must still stop the hopeless one in each K, which needs the races from before."""
    space = tmp_path / "asha.toml"
    space.write_text(SPACE)
    flag = tmp_path / "interrupted"
    options = StudyOptions(
        space=str(space), storage=str(storage), scheduler="asha", grace_period=2,
        reduction_factor=2, max_concurrent=1,
    )  # fmt: skip
    first = run_study(options, callbacks=[InterruptAfter(flag, 2)], out=io.StringIO())
    assert flag.exists() and first.exit_code == EXIT_INTERRUPTED
    study = storage / "asha"
    results = study / "results"
    before = pd.read_parquet(results / "trials.parquet")
    assert set(before.loc[before["status"] == "TERMINATED", "lr"]) == {0.3}
    with open(study / "scheduler.pkl", "rb") as f:
        assert len(pickle.load(f)["races"]) == 2  # one race per K (one seed)

    again = run_study(
        StudyOptions(resume=True, name="asha", storage=str(storage)), out=io.StringIO()
    )
    assert again.exit_code == 0 and again.finished == 4
    trials = pd.read_parquet(results / "trials.parquet").set_index("trial_id")
    stopped = trials[trials["status"] == "STOPPED"]
    assert sorted(stopped["k"]) == [1.0, float("inf")] and set(stopped["lr"]) == {0.0003}
    assert set(trials.loc[trials["status"] == "TERMINATED", "lr"]) == {0.3}

    metrics = pd.read_parquet(results / "metrics")
    for trial_id in stopped.index:  # every reported row is kept, up to the stop
        steps = metrics.loc[metrics["trial_id"] == trial_id, "step"].tolist()
        assert steps == list(range(0, steps[-1] + 1, 4)) and 0 < steps[-1] < 40
    assert metrics.groupby("trial_id")["step"].apply(lambda s: s.is_unique).all()

    # the report: stopped trials lose the tuning and are never points of a curve
    loaded = reports.load_trials(study)
    tuning = reports.tune_on_validation(loaded)
    assert tuning is not None and not tuning.refused
    assert set(tuning.trials["__lr"]) == {0.3}
    assert not set(tuning.trials["trial_id"]) & set(stopped.index)


def test_the_grid_generator_counts_a_trial_waiting_at_a_rung_as_holding_no_slot() -> None:
    """--max-concurrent 1: Tune starts every trial its generator hands out, and its own limit
    counts a paused trial as live, so a cell's first trial, waiting at a rung, would keep the
    rest of its cell from ever starting. SlotVariants hands out the next one."""
    tune.register_trainable("slot_variants_test", lambda config: None)
    gen = SlotVariants(limit=1, study="slots")
    gen.add_configurations(
        {"e": {"run": "slot_variants_test", "config": {"lr": tune.grid_search([1, 2, 3])}}}
    )
    first = gen.next_trial()
    assert first.config == {"lr": 1} and gen.next_trial() is None  # one slot, taken
    ACTIVE["slots"] = SimpleNamespace(waits=lambda trial_id: trial_id == first.trial_id)
    try:
        second = gen.next_trial()
        assert second.config == {"lr": 2} and gen.next_trial() is None
        gen.on_trial_complete(second.trial_id)
        assert gen.next_trial().config == {"lr": 3}
    finally:
        ACTIVE.pop("slots")
