"""Issue 13, items 3-5 and 12: what a resume continues from, and what it checks first.

In-process studies on the shared test Ray: the smoke space (4 trials of 5 records). Ctrl+C is
a SIGINT this process sends itself at the first result (Tune stops gracefully, exit 130).
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import study.execute.writer as writer_module
from study.run import main
from study.service import EXIT_ERRORED, StudyOptions, run_study
from tests.study.execute.test_reliability_faults import STEPS, _check_exact
from tests.study.execute.test_study_faults import KillWorkerOnce
from tests.test_reliability_concurrency import Interrupt

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]


@contextlib.contextmanager
def _tz(zone: str) -> Iterator[None]:
    """This process's local time zone (Tune names its snapshot in local time)."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = zone
    time.tzset()
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = before
        time.tzset()


def _files(experiment: Path) -> dict[str, int]:
    """What a rerun would change: each metrics file's mtime, each result.json's line count
    (Tune reopens those on every restore, so their mtimes change anyway)."""
    metrics = {
        str(p.relative_to(experiment)): p.stat().st_mtime_ns
        for p in experiment.glob("results/metrics/*.parquet")
    }
    results = {
        str(p.relative_to(experiment)): len(p.read_text().splitlines())
        for p in experiment.glob("*/result.json")
    }
    return {**metrics, **results}


def test_a_resume_continues_from_the_newest_snapshot_whatever_the_time_zone(
    ray_session: Any, storage: Path, tmp_path: Path
) -> None:
    """Ctrl+C at UTC+14, resume to the end at UTC-12 (its snapshot's name sorts 26 h before
    the first's), resume again: nothing to do. Before the fix the last resume loaded the first
    snapshot and reran (or lost, as ERROR) trials whose checkpoints were gone."""
    options = StudyOptions(space="smoke", storage=str(storage))
    resume = StudyOptions(resume=True, name="smoke", storage=str(storage))
    experiment = storage / "smoke"
    with _tz("Etc/GMT-14"):
        assert (
            run_study(options, callbacks=[Interrupt(tmp_path / "i")], out=io.StringIO()).exit_code
            == 130
        )
    with _tz("Etc/GMT+12"):
        out = io.StringIO()
        assert run_study(resume, out=out).exit_code == 0, out.getvalue()
    assert len(list(experiment.glob("experiment_state-*.json"))) == 2
    before = _files(experiment)
    out = io.StringIO()
    again = run_study(resume, out=out)
    assert again.exit_code == 0 and "4/4 trials finished" in out.getvalue(), out.getvalue()
    assert _files(experiment) == before  # no trial ran again
    states = list(experiment.glob("experiment_state-*.json"))
    assert len(states) == 2  # the one continued from, and this run's
    _check_exact(experiment)


def test_a_finished_trials_missing_or_damaged_metrics_are_rebuilt_on_resume(
    ray_session: Any, storage: Path
) -> None:
    """Deleted, random bytes, truncated: rewritten from the trial's last checkpoint. A file
    whose checkpoints are gone too is named as lost, and the resume exits 1. Before the fix
    the resume printed "4/4 finished" and exited 0 with the files still missing."""
    options = StudyOptions(space="smoke", storage=str(storage))
    assert run_study(options, out=io.StringIO()).exit_code == 0
    experiment = storage / "smoke"
    metrics_dir = experiment / "results" / "metrics"
    original = pd.read_parquet(metrics_dir).sort_values(["trial_id", "step"], ignore_index=True)
    files = sorted(metrics_dir.glob("*.parquet"))
    files[0].unlink()
    files[1].write_bytes(os.urandom(3000))
    files[2].write_bytes(files[2].read_bytes()[:-100])

    resume = StudyOptions(resume=True, name="smoke", storage=str(storage))
    out = io.StringIO()
    again = run_study(resume, out=out)
    assert again.exit_code == 0, out.getvalue()
    for f in files[:3]:
        assert f"rewrote {f} from its trial's last checkpoint" in out.getvalue()
    rebuilt = pd.read_parquet(metrics_dir).sort_values(["trial_id", "step"], ignore_index=True)
    pd.testing.assert_frame_equal(rebuilt, original)
    _check_exact(experiment)

    # Damaged, and its trial's checkpoints and Tune's log of its reports deleted: cannot be
    # rebuilt (with the log left, it is rebuilt from there: tests/study/store/test_verify.py).
    trials = pd.read_parquet(experiment / "results" / "trials.parquet").set_index("trial_id")
    lost = files[3]
    for checkpoint in (experiment / trials.loc[lost.stem, "logdir"]).glob("checkpoint_*"):
        shutil.rmtree(checkpoint)
    (experiment / trials.loc[lost.stem, "logdir"] / "result.json").unlink()
    lost.write_bytes(b"not parquet")
    out = io.StringIO()
    third = run_study(resume, out=out)
    assert third.exit_code == EXIT_ERRORED, out.getvalue()
    assert f"lost:    {lost} (missing or unreadable" in out.getvalue()
    assert (metrics_dir / f".{lost.name}.damaged").read_bytes() == b"not parquet"
    assert len(pd.read_parquet(metrics_dir)) == 3 * len(STEPS)  # the folder stays readable


def test_an_errored_trials_reported_rows_are_stored(
    ray_session: Any, storage: Path, tmp_path: Path
) -> None:
    """No checkpoint before the error: before the fix its metrics file did not exist, though
    Tune had logged every step up to the kill."""
    total, every = 200, 10
    options = StudyOptions(
        space="smoke", storage=str(storage), max_failures=0, checkpoint_every=100,
        overrides=["k=4", f"total_steps={total}", f"eval_every={every}", "probe_size=0"],
    )  # fmt: skip
    killer = KillWorkerOnce(tmp_path / "killed", at_step=total // 2)
    outcome = run_study(options, callbacks=[killer], out=io.StringIO())
    assert outcome.exit_code == EXIT_ERRORED and outcome.counts == {"ERROR": 1}
    killed_at = int((tmp_path / "killed").read_text().split()[1])
    experiment = storage / "smoke"
    rows = pd.read_parquet(experiment / "results" / "metrics").sort_values("step")
    assert rows["step"].tolist() == list(range(0, killed_at + 1, every))
    trials = pd.read_parquet(experiment / "results" / "trials.parquet")
    assert trials["status"].tolist() == ["ERROR"]
    assert rows["trial_id"].unique().tolist() == trials["trial_id"].tolist()
    assert rows["test_acc"].notna().all() and (rows["attempt"] == 0).all()

    resume = StudyOptions(resume=True, name="smoke", storage=str(storage), retry_errored=True)
    assert run_study(resume, out=io.StringIO()).exit_code == 0
    rows = pd.read_parquet(experiment / "results" / "metrics").sort_values("step")
    assert rows["step"].tolist() == list(range(0, total + 1, every))  # unique after the retry


def test_a_full_disk_ends_with_one_line_naming_the_path_and_a_resume_completes(
    ray_session: Any,
    storage: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The driver's trials.parquet write fails with ENOSPC mid-study. Before: a traceback."""
    real = writer_module.write_parquet_atomic
    calls = {"n": 0}

    def full(fs: Any, path: str, table: Any) -> None:
        calls["n"] += 1
        if calls["n"] >= 3:
            raise OSError(errno.ENOSPC, "No space left on device", path)
        real(fs, path, table)

    monkeypatch.setattr(writer_module, "write_parquet_atomic", full)
    capsys.readouterr()
    code = main(["--space", "smoke", "--storage", str(storage)])
    err = capsys.readouterr().err.strip().splitlines()
    trials_file = storage / "smoke" / "results" / "trials.parquet"
    assert code == 2 and len(err) == 1, err
    assert err[-1].startswith(f"error: cannot write {trials_file}: No space left on device"), err
    assert "--resume --name smoke" in err[-1]
    assert not any("Traceback" in line for line in err), err
    monkeypatch.setattr(writer_module, "write_parquet_atomic", real)
    out = io.StringIO()
    again = run_study(StudyOptions(resume=True, name="smoke", storage=str(storage)), out=out)
    assert again.exit_code == 0 and "4/4 trials finished" in out.getvalue(), out.getvalue()
    _check_exact(storage / "smoke")
