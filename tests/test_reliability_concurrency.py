"""Issue 13, items 1 and 2: one driver per study, through the study lock (study/lock.py).

Two real drivers (`python -m study.run` subprocesses attached to the shared test Ray) start one
new study at once: exactly one runs it. A second `--resume` of a study that a live driver is
resuming is refused, naming the holder. The lock's own rules (stale, other host, release) are
checked without Ray.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from ray import tune

from study.errors import StudyError
from study.run import main
from study.service import StudyOptions, run_study
from study.store import lock
from tests.study.execute.test_reliability_faults import _check_exact, _driver, _kill_group, _wait
from tests.study.test_study_smoke import _tree

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]  # drivers in subprocesses


def _holder(**changes: Any) -> dict[str, Any]:
    return {**lock.this_holder("test"), **changes}


def _write_lock(experiment: Path, holder: dict[str, Any]) -> Path:
    experiment.mkdir(parents=True, exist_ok=True)
    path = experiment / lock.LOCK_FILE
    path.write_text(json.dumps(holder))
    return path


# ---------------------------------------------------------------- the lock's rules (no Ray)


def test_lock_is_exclusive_records_its_holder_and_is_released(tmp_path: Path) -> None:
    import pyarrow.fs as pafs

    fs, experiment = pafs.LocalFileSystem(), str(tmp_path / "s")
    held = lock.acquire(fs, experiment, create_dir=True, command="python -m study.run x")
    holder = lock.read_holder(lock.lock_path(experiment))
    assert holder is not None and holder["pid"] == os.getpid()
    assert holder["host"] == socket.gethostname() and holder["command"] == "python -m study.run x"
    assert holder["created_at"].endswith("+00:00") and lock.is_live(holder)
    with pytest.raises(StudyError, match="already exists"):  # a second new study: refused
        lock.acquire(fs, experiment, create_dir=True)
    lock.release(held)
    assert not os.path.exists(lock.lock_path(experiment))
    lock.release(held)  # twice: no error


def test_a_stale_lock_on_this_host_is_taken_over(tmp_path: Path) -> None:
    import pyarrow.fs as pafs

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path = _write_lock(tmp_path / "s", _holder(pid=dead.pid))
    assert not lock.is_live(lock.read_holder(str(path)))
    held = lock.acquire(pafs.LocalFileSystem(), str(tmp_path / "s"))
    assert lock.read_holder(str(path))["pid"] == os.getpid()
    lock.release(held)
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == []  # no leftovers


def test_a_new_study_killed_while_ray_started_can_be_started_again(
    storage: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Its folder holds only its dead driver's lock: a new start reclaims the name; a resume
    says to start it again (before: "study.json is missing", and the name was lost)."""
    import pyarrow.fs as pafs

    from study.store.fs import StudyPaths, resolve_storage
    from study.store.state import check_fresh

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _write_lock(storage / "smoke", _holder(pid=dead.pid))
    before = _tree(storage)
    assert main(["--resume", "--name", "smoke", "--storage", str(storage)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "never started" in err and "without --resume" in err
    assert _tree(storage) == before
    check_fresh(StudyPaths(resolve_storage(str(storage)), "smoke"))  # not refused
    held = lock.acquire(pafs.LocalFileSystem(), str(storage / "smoke"), create_dir=True)
    assert lock.read_holder(held.path)["pid"] == os.getpid()
    lock.release(held, remove_created_dir=True)
    assert not (storage / "smoke").exists()


def test_a_reused_pid_does_not_keep_a_lock_alive(tmp_path: Path) -> None:
    """The pid runs, but its process started after the lock was written: not the holder."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        path = _write_lock(
            tmp_path / "s", _holder(pid=sleeper.pid, created_at="2001-01-01T00:00:00+00:00")
        )
        assert not lock.is_live(lock.read_holder(str(path)))
        assert lock.is_live(_holder(pid=sleeper.pid))  # written after it started: live
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_live_or_foreign_lock_is_refused_naming_the_holder(tmp_path: Path) -> None:
    import pyarrow.fs as pafs

    fs = pafs.LocalFileSystem()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _write_lock(tmp_path / "a", _holder(pid=sleeper.pid, command="python -m study.run A"))
        with pytest.raises(lock.LockHeld, match=rf"pid {sleeper.pid} on .*study.run A"):
            lock.acquire(fs, str(tmp_path / "a"), break_lock=True)  # live here: never broken
    finally:
        sleeper.kill()
        sleeper.wait()
    _write_lock(tmp_path / "b", _holder(host="elsewhere.example", pid=1))
    with pytest.raises(lock.LockHeld, match=r"on elsewhere\.example .* pass --break-lock"):
        lock.acquire(fs, str(tmp_path / "b"))
    held = lock.acquire(fs, str(tmp_path / "b"), break_lock=True)
    assert lock.read_holder(held.path)["pid"] == os.getpid()
    lock.release(held)


def test_cli_refuses_a_study_locked_from_another_host_and_changes_nothing(
    storage: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before Ray starts; the whole storage is left as it was."""
    study = storage / "s"
    study.mkdir()
    (study / "study.json").write_text(
        json.dumps({"format": 1, "space": "smoke", "searcher": "grid", "num_samples": 1})
    )
    (study / "tuner.pkl").write_bytes(b"\x80\x04N.")
    (study / "experiment_state-2026-01-01_00-00-00.json").write_text(
        json.dumps({"trial_data": [["{}", "{}"]], "runner_data": {}})
    )
    _write_lock(study, _holder(host="elsewhere.example", pid=4242))
    before = _tree(storage)
    assert main(["--resume", "--name", "s", "--storage", str(storage)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: study is locked by pid 4242")
    assert "elsewhere.example" in err and "--break-lock" in err
    assert _tree(storage) == before


# ---------------------------------------------------------------- two real drivers


@pytest.mark.ray
def test_two_drivers_starting_one_new_study_only_one_runs_it(
    ray_session: Any, storage: Path, tmp_path: Path
) -> None:
    """Before the fix both exited 0 into one folder, every row stored twice."""
    address = ray_session.get_runtime_context().gcs_address
    argv = ["--space", "smoke", "--name", "dup", "--storage", str(storage)]
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    drivers = [_driver(argv, logs[0], address), _driver(argv, logs[1], address)]
    try:
        outs = [_wait(d, log) for d, log in zip(drivers, logs, strict=True)]
    finally:
        for d in drivers:
            _kill_group(d)
    codes = sorted(d.returncode for d in drivers)
    assert codes == [0, 2], outs
    loser = outs[[d.returncode for d in drivers].index(2)].strip().splitlines()
    assert len(loser) == 1 and loser[0].startswith("error: "), loser
    assert "already exists" in loser[0] or "locked by" in loser[0], loser
    metrics = _check_exact(storage / "dup")
    assert metrics["trial_id"].nunique() == 4 and len(metrics) == 4 * 5
    assert not (storage / "dup" / lock.LOCK_FILE).exists()  # released at the end


class Interrupt(tune.Callback):
    """Ctrl+C (SIGINT to this process) at the first result: Tune stops gracefully.

    Tune pickles callbacks with the experiment and a resume restores them, so "once" and
    "this process" live in a file and a pid, not in memory."""

    def __init__(self, flag: Path) -> None:
        self.flag, self.pid = str(flag), os.getpid()

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info):
        if os.getpid() == self.pid and not os.path.exists(self.flag):
            Path(self.flag).touch()
            os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.ray
def test_a_second_resume_of_a_live_study_is_refused_naming_the_holder(
    ray_session: Any, storage: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before the fix both drivers ran the same trials and Tune's result.json got extra lines.
    Also: Ctrl+C releases the lock."""
    options = StudyOptions(space="smoke", storage=str(storage))
    first = run_study(options, callbacks=[Interrupt(tmp_path / "interrupted")], out=io.StringIO())
    assert first.exit_code == 130
    experiment = storage / "smoke"
    assert not (experiment / lock.LOCK_FILE).exists()  # released on the interrupt

    address = ray_session.get_runtime_context().gcs_address
    log = tmp_path / "resume.log"
    driver = _driver(["--resume", "--name", "smoke", "--storage", str(storage)], log, address)
    try:
        deadline = time.time() + 120
        while (holder := lock.read_holder(str(experiment / lock.LOCK_FILE))) is None:
            assert driver.poll() is None, log.read_text()[-3000:]
            assert time.time() < deadline
            time.sleep(0.05)
        assert holder["pid"] == driver.pid and "--resume" in holder["command"]
        capsys.readouterr()
        assert main(["--resume", "--name", "smoke", "--storage", str(storage)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        assert f"study is locked by pid {driver.pid} on {socket.gethostname()}" in err
        out = _wait(driver, log)
    finally:
        _kill_group(driver)
    assert driver.returncode == 0 and "4/4 trials finished" in out, out[-3000:]
    metrics = _check_exact(experiment)  # Tune's last results agree with ours; no duplicates
    assert sorted(metrics.groupby("trial_id").size()) == [5, 5, 5, 5]
    assert not (experiment / lock.LOCK_FILE).exists()


@pytest.mark.ray
def test_sigterm_releases_the_lock(ray_session: Any, storage: Path, tmp_path: Path) -> None:
    """A driver stopped with SIGTERM mid-study leaves no lock behind (SIGKILL does: stale)."""
    address = ray_session.get_runtime_context().gcs_address
    log = tmp_path / "driver.log"
    argv = ["--space", "smoke", "--storage", str(storage), "--set", "total_steps=4000"]
    driver = _driver(argv, log, address)
    path = storage / "smoke" / lock.LOCK_FILE
    try:
        deadline = time.time() + 120
        while not list((storage / "smoke").glob("ilstudy_trial_*/result.json")):
            assert driver.poll() is None, log.read_text()[-3000:]
            assert time.time() < deadline, log.read_text()[-3000:]
            time.sleep(0.05)
        assert lock.read_holder(str(path))["pid"] == driver.pid
        driver.send_signal(signal.SIGTERM)
        driver.wait(timeout=60)
    finally:
        _kill_group(driver)
    assert not path.exists(), log.read_text()[-3000:]
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]
