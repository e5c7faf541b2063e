"""Issue 23, items 1 and 8: no row lost at checkpoint cadence 1.

Tune's `CheckpointConfig(num_to_keep=2)` deleted checkpoints that the experiment snapshot on
storage still named, so a resume failed those trials for good. Now Tune keeps them and the
study deletes only those no snapshot can name (study.execute.retention); a resume whose
snapshot names a checkpoint that is gone anyway continues that trial from its most advanced
complete checkpoint. The kill loop (tests/reliability_loop.py) runs real driver SIGKILLs at
cadence 1, with and without ASHA.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import signal
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from ray import tune

import study.execute.resume as resume_module
from study.execute.retention import Folder, checkpoint_folders, doomed
from study.service import StudyOptions, run_study
from study.store.tune_files import named_checkpoints
from tests import reliability_loop

SETS = ("total_steps=100", "eval_every=5")  # 21 records a trial: 21 checkpoints at cadence 1
STEPS = list(range(0, 101, 5))
pytestmark = pytest.mark.timeout(900)  # minutes on a quiet machine; more on a loaded one


# ---- which checkpoints go (no Ray) -----------------------------------------------------------
def _f(name: str, mtime: float, complete: bool = True) -> Folder:
    return Folder(name, complete, mtime)


def test_the_named_and_the_newest_two_complete_checkpoints_stay() -> None:
    folders = [_f("checkpoint_000001", 1), _f("checkpoint_000002", 2), _f("checkpoint_000003", 3),
               _f("checkpoint_000004", 4), _f("checkpoint_000005", 5, complete=False)]  # fmt: skip
    # Nothing in flight any more (the experiment ended): named + newest two complete, and the
    # incomplete one newer than them (still being written).
    assert doomed(folders, {"checkpoint_000001"}, None) == ["checkpoint_000002"]
    # A live snapshot naming 2: one on its way to storage may name 2 or anything newer.
    assert doomed(folders, {"checkpoint_000001"}, {"checkpoint_000002"}) == []
    assert doomed(folders, set(), {"checkpoint_000003"}) == [
        "checkpoint_000001",
        "checkpoint_000002",
    ]
    # The live snapshot names none of the trial's yet: any may be named by one in flight.
    assert doomed(folders, set(), set()) == []
    # An incomplete folder older than the newest two (a kill mid-upload) goes.
    old = [_f("checkpoint_000009", 0.5, complete=False), *folders[1:4]]
    assert doomed(old, set(), None) == ["checkpoint_000002", "checkpoint_000009"]


def test_a_snapshot_names_its_checkpoints_inside_the_pickled_manager() -> None:
    """The folder names are read from the hex pickle's bytes, never unpickled."""
    path = "/s/study/ilstudy_trial_a_00000_0/checkpoint_000007"
    blob = {"_type": "CLOUDPICKLE_FALLBACK", "value": pickle.dumps({"path": path}).hex()}
    metadata = json.dumps({"checkpoint_manager": blob, "last_result": {}})
    trial = json.dumps({"trial_id": "a_00000", "relative_logdir": "ilstudy_trial_a_00000_0"})
    state = {"trial_data": [[trial, metadata]], "runner_data": {}}
    assert named_checkpoints(state) == {"ilstudy_trial_a_00000_0": {"checkpoint_000007"}}
    with pytest.raises(ValueError):
        named_checkpoints([])


# ---- in-process studies on the shared Ray ----------------------------------------------------
class NamedStayOnStorage(tune.Callback):
    """At every result: does each checkpoint a snapshot on storage names exist? Misses are
    appended to a file (a callback's exception would only be logged by Tune)."""

    def __init__(self, experiment: Path, misses: Path) -> None:
        self.experiment, self.misses = str(experiment), str(misses)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info):
        for state_file in Path(self.experiment).glob("experiment_state-*.json"):
            try:
                named = named_checkpoints(json.loads(state_file.read_text()))
            except (OSError, ValueError):
                continue  # being replaced
            for folder, names in named.items():
                for name in names:
                    if not (Path(self.experiment) / folder / name).is_dir():
                        with open(self.misses, "a") as f:
                            f.write(f"{folder}/{name}\n")


class InterruptAfter(tune.Callback):
    """Ctrl+C (SIGINT to this process) at the `n`-th result, once (the flag file says so)."""

    def __init__(self, flag: Path, n: int) -> None:
        self.flag, self.n, self.pid, self.seen = str(flag), n, os.getpid(), 0

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info):
        self.seen += 1
        if os.getpid() == self.pid and self.seen >= self.n and not os.path.exists(self.flag):
            Path(self.flag).touch()
            os.kill(os.getpid(), signal.SIGINT)


def _options(storage: Path, **kw: Any) -> StudyOptions:
    return StudyOptions(
        space="smoke",
        storage=str(storage),
        checkpoint_every=1,
        overrides=SETS,
        max_failures=0,
        **kw,
    )


def _rows(experiment: Path) -> pd.DataFrame:
    metrics = pd.read_parquet(experiment / "results" / "metrics")
    return metrics[reliability_loop.VALUES].sort_values(["k", "step"], ignore_index=True)


def _bounded(experiment: Path) -> None:
    """Every trial keeps at most the final snapshot's named checkpoints and its newest two."""
    states = list(experiment.glob("experiment_state-*.json"))
    named: dict[str, set[str]] = {}
    for state in states:
        for folder, names in named_checkpoints(json.loads(state.read_text())).items():
            named.setdefault(folder, set()).update(names)
    import pyarrow.fs as pafs

    fs = pafs.LocalFileSystem()
    for trial_dir in experiment.glob("ilstudy_trial_*"):
        folders = checkpoint_folders(fs, str(trial_dir))
        newest = {f.name for f in sorted(folders, key=lambda f: f.mtime)[-2:]}
        extra = {f.name for f in folders} - newest - named.get(trial_dir.name, set())
        assert not extra, (trial_dir.name, extra, sorted(folders, key=lambda f: f.mtime), named)


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory: pytest.TempPathFactory, ray_session: Any) -> Path:
    """The smoke study at cadence 1, run to its end, watched at every result."""
    storage = tmp_path_factory.mktemp("unbroken") / "studies"
    misses = storage.parent / "misses.txt"
    watch = NamedStayOnStorage(storage / "smoke", misses)
    out = io.StringIO()
    assert run_study(_options(storage), callbacks=[watch], out=out).exit_code == 0, out.getvalue()
    assert not misses.exists(), misses.read_text()  # no named checkpoint ever went missing
    return storage / "smoke"


def test_at_cadence_1_disk_stays_bounded_and_no_named_checkpoint_is_deleted(
    unbroken: Path,
) -> None:
    _bounded(unbroken)
    metrics = pd.read_parquet(unbroken / "results" / "metrics")
    for _, rows in metrics.groupby("trial_id"):
        assert sorted(rows["step"]) == STEPS


def _interrupt_and_delete_named(storage: Path, tmp_path: Path) -> list[str]:
    """Ctrl+C mid-study, then every checkpoint the snapshot names for an unfinished trial
    deleted by hand; returns them (`<trial folder>/<checkpoint>`)."""
    stop = InterruptAfter(tmp_path / "interrupted", 30)
    assert run_study(_options(storage), callbacks=[stop], out=io.StringIO()).exit_code == 130
    experiment = storage / "smoke"
    (state_file,) = experiment.glob("experiment_state-*.json")
    state = json.loads(state_file.read_text())
    unfinished = {
        json.loads(t)["relative_logdir"]
        for t, _ in state["trial_data"]
        if json.loads(t)["status"] != "TERMINATED"
    }
    deleted = []
    for folder, names in named_checkpoints(state).items():
        for name in names if folder in unfinished else ():
            if (experiment / folder / name).is_dir():
                shutil.rmtree(experiment / folder / name)
                deleted.append(f"{folder}/{name}")
    assert deleted, "the snapshot named no checkpoint of an unfinished trial"
    return deleted


def _same_as_unbroken(experiment: Path, unbroken: Path) -> None:
    pd.testing.assert_frame_equal(_rows(experiment), _rows(unbroken))
    trials = pd.read_parquet(experiment / "results" / "trials.parquet")
    assert set(trials["status"]) == {"TERMINATED"}
    _bounded(experiment)


def test_a_resume_whose_snapshot_names_a_deleted_checkpoint_loses_no_row(
    unbroken: Path, storage: Path, tmp_path: Path
) -> None:
    """Every checkpoint the snapshot names deleted, resume: exit 0, every row equal to the
    unbroken run's. Before the fix those trials ended in ERROR (exit 1)."""
    _interrupt_and_delete_named(storage, tmp_path)
    out = io.StringIO()
    resumed = run_study(_options(storage, resume=True, name="smoke"), out=out)
    assert resumed.exit_code == 0, out.getvalue()
    assert "the checkpoint its snapshot names is gone" in out.getvalue()
    _same_as_unbroken(storage / "smoke", unbroken)


def test_retry_errored_recovers_trials_that_errored_on_a_missing_checkpoint(
    unbroken: Path, storage: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resume without the repair (as before the fix) fails those trials: ERROR, exit 1.
    `--retry-errored` then brings every one of them to the end, no row lost."""
    _interrupt_and_delete_named(storage, tmp_path)
    with monkeypatch.context() as patched:
        patched.setattr(resume_module, "repair_named_checkpoints", lambda *a: [])
        broken = run_study(_options(storage, resume=True, name="smoke"), out=io.StringIO())
    assert broken.exit_code == 1
    trials = pd.read_parquet(storage / "smoke" / "results" / "trials.parquet")
    assert "ERROR" in set(trials["status"])
    out = io.StringIO()
    retried = run_study(_options(storage, resume=True, name="smoke", retry_errored=True), out=out)
    assert retried.exit_code == 0, out.getvalue()
    _same_as_unbroken(storage / "smoke", unbroken)


# ---- the kill loop: real driver SIGKILLs at cadence 1 ----------------------------------------
LOOP = dict(checkpoint_every=1, total_steps=300, eval_every=10)


@pytest.mark.slow
@pytest.mark.parametrize("scheduler", ["fifo", "asha"])
def test_cadence_1_survives_driver_kills(scheduler: str, tmp_path: Path, ray_session: Any) -> None:
    """Up to 3 SIGKILLs at random moments, resumed to the end: 0 rows lost, duplicated or changed,
    and every trial's final status as in the unbroken run (run in-process on the shared Ray;
    the killed drivers each start an embedded Ray, as `python -m study.run` does by default)."""
    argv = reliability_loop.study_args(tmp_path, scheduler=scheduler, **LOOP)
    base = tmp_path / "unbroken"
    sets = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    options = StudyOptions(space=argv[1], storage=str(base), overrides=sets,
                           checkpoint_every=1, scheduler=None if scheduler == "fifo" else scheduler)  # fmt: skip
    out = io.StringIO()
    assert run_study(options, out=out).exit_code == 0, out.getvalue()
    r = reliability_loop.kill_loop(
        3, seed=1, scheduler=scheduler, rivals_on=False, root=tmp_path,
        baseline_run=base / Path(argv[1]).stem, **LOOP,
    )  # fmt: skip
    # A driver that finishes before its kill ends the loop early: how many land is timing.
    assert r["exit"] == 0 and r["kills"] >= 1, r
    assert (r["lost"], r["duplicated"], r["differing"], r["statuses_differing"]) == (0, 0, 0, 0), r
