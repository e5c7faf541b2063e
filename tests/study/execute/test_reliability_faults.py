"""Issue #5, faults: killed drivers, concurrent studies, determinism, divergence, loopback.

Drivers run as `python -m study.run` subprocesses attached to the shared test Ray (its GCS
address), except the first, which starts its own embedded Ray so that its listening sockets
can be checked. Each is killed with SIGKILL at a chosen point and resumed with `--resume`.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from study.service import StudyOptions, run_study
from study.store.layout import METRIC_NAMES
from tests.study.execute.test_study_cluster import _valid_state

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[3]
TOTAL, EVERY = 40, 10  # the smoke space's own: 5 records per trial, 4 trials (k = 1, 4, 16, inf)
STEPS = list(range(0, TOTAL + 1, EVERY))
LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


def _psutil() -> Any:
    """psutil, which ships inside Ray: importing ray puts it on sys.path."""
    import importlib

    importlib.import_module("ray")
    return importlib.import_module("psutil")


def _driver(argv: list[str], log: Path, address: str | None) -> subprocess.Popen:
    """`python -m study.run ARGV` in its own session; the CLI sets up Ray's environment itself."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS",)}
    env["PYTHONUNBUFFERED"] = "1"
    # The CLI must choose loopback itself: for its embedded Ray, and to attach to the shared
    # Ray, which listens on 127.0.0.1 only (before the fix, such a driver waited for ever).
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
    extra = ["--address", address] if address else []
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "study.run", *argv, *extra], cwd=REPO, env=env,
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def _kill_group(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def _wait(process: subprocess.Popen, log: Path, timeout: float = 240) -> str:
    process.wait(timeout=timeout)
    return log.read_text()


def _results_seen_by_tune(experiment: Path) -> int:
    """Results Tune has logged so far, over all trials (lines of the trials' result.json)."""
    lines = 0
    for file in experiment.glob("ilstudy_trial_*/result.json"):
        with contextlib.suppress(OSError):
            lines += sum(1 for line in file.read_text().splitlines() if line.strip())
    return lines


def _listening(root_pid: int) -> list[tuple[str, int, str]]:
    """(ip, port, process name) of every listening TCP socket of `root_pid` and descendants."""
    psutil = _psutil()

    try:
        root = psutil.Process(root_pid)
        procs = {p.pid: p for p in [root, *root.children(recursive=True)]}
    except psutil.NoSuchProcess:
        return []
    out = []
    for conn in psutil.net_connections("inet"):
        if conn.status == psutil.CONN_LISTEN and conn.pid in procs:
            with contextlib.suppress(psutil.Error):
                out.append((conn.laddr.ip, conn.laddr.port, procs[conn.pid].name()))
    return out


def _tune_last_results(experiment: Path) -> dict[str, dict[str, Any]]:
    """trial_id -> the last result in Tune's own per-trial result.json."""
    last = {}
    for file in experiment.glob("ilstudy_trial_*/result.json"):
        lines = [json.loads(x) for x in file.read_text().splitlines() if x.strip()]
        if lines:
            last[lines[-1]["trial_id"]] = lines[-1]
    return last


def _check_exact(experiment: Path, statuses: set[str] = frozenset({"TERMINATED"})) -> pd.DataFrame:
    """Every (trial, step) stored once and none missing; trials.parquet agrees with Tune."""
    results = experiment / "results"
    metrics = pd.read_parquet(results / "metrics")
    assert not metrics.duplicated(["trial_id", "step"]).any()
    assert (metrics["study"] == experiment.name).all()
    trials = pd.read_parquet(results / "trials.parquet").set_index("trial_id").sort_index()
    assert set(trials["status"]) <= statuses, trials["status"]
    for trial_id, rows in metrics.groupby("trial_id"):
        expected = STEPS if trials.loc[trial_id, "status"] == "TERMINATED" else None
        if expected is not None:
            assert sorted(rows["step"]) == expected, (trial_id, sorted(rows["step"]))
    tune = _tune_last_results(experiment)
    assert sorted(tune) == list(trials.index) == sorted(metrics["trial_id"].unique())
    for trial_id, row in trials.iterrows():
        assert (experiment / row["logdir"] / "result.json").exists()
        for key in ("step", "test_acc", "train_loss", "feature_updates", "diverged"):
            theirs, ours = tune[trial_id][key], row[key]
            assert theirs == ours or (pd.isna(theirs) and pd.isna(ours)), (trial_id, key)
    assert not list((results / "metrics").glob(".*"))  # no temporary files left
    return metrics


def _values(metrics: pd.DataFrame) -> pd.DataFrame:
    """The metric values by (k, step), timings left out."""
    columns = ["k", *[c for c in METRIC_NAMES if c not in ("elapsed_s",)]]
    return metrics[columns].sort_values(["k", "step"]).reset_index(drop=True)


def test_killed_drivers_resume_exactly_alongside_another_study(
    ray_session: Any, storage: Path, tmp_path: Path
) -> None:
    """SIGKILL before the first result (embedded Ray: loopback only) and while results are
    written; the first study's resume runs at the same time as the second study, in the same
    storage; both end exact, and their metric values are identical (same config and seed)."""
    address = ray_session.get_runtime_context().gcs_address
    common = ["--space", "smoke", "--storage", str(storage)]

    # 1. Embedded Ray; killed once Tune saved its state but before any trial reported.
    early_log = tmp_path / "early.log"
    early = _driver([*common, "--name", "early"], early_log, address=None)
    experiment, sockets = storage / "early", []
    try:
        deadline = time.time() + 180
        while _valid_state(experiment) is None:
            assert early.poll() is None, early_log.read_text()[-3000:]
            assert time.time() < deadline, "Tune never saved its state"
            time.sleep(0.05)
        sockets = _listening(early.pid)
        assert _results_seen_by_tune(experiment) == 0, "too late: a trial already reported"
    finally:
        _kill_group(early)
    assert sockets, "found no listening sockets of the embedded Ray"
    assert {ip for ip, _, _ in sockets} <= LOOPBACK, sockets

    # 2. A second study starts; the first resumes meanwhile; the second is killed just as a
    # trial rewrites its metrics file (a temporary file seen, else right after a change).
    mid_log, resume_log = tmp_path / "mid.log", tmp_path / "resume_early.log"
    mid = _driver([*common, "--name", "mid", "--checkpoint-every", "1"], mid_log, address)
    resume = _driver(["--resume", "--name", "early", "--storage", str(storage)], resume_log,
                     address)  # fmt: skip
    metrics_dir = storage / "mid" / "results" / "metrics"
    try:
        deadline, seen, caught = time.time() + 180, None, ""
        while not caught:
            assert mid.poll() is None, mid_log.read_text()[-3000:]
            assert time.time() < deadline, "no write to kill the driver in"
            with contextlib.suppress(OSError):
                names = os.listdir(metrics_dir)
                if any(n.endswith(".tmp") for n in names):
                    caught = "during a write"
                state = {n: os.stat(metrics_dir / n).st_mtime_ns for n in names if n[0] != "."}
                if seen and state != seen:
                    caught = caught or "right after a write"
                seen = state or seen
            time.sleep(0.002)
        overlapped = resume.poll() is None
        print(f"second driver killed {caught}")
    finally:
        _kill_group(mid)
    assert overlapped, "the first study's resume ended before the second study wrote"
    out = _wait(resume, resume_log)
    assert resume.returncode == 0 and "4/4 trials finished" in out, out[-3000:]

    again_log = tmp_path / "resume_mid.log"
    again = _driver(["--resume", "--name", "mid", "--storage", str(storage)], again_log, address)
    out = _wait(again, again_log)
    assert again.returncode == 0 and "4/4 trials finished" in out, (caught, out[-3000:])

    assert sorted(p.name for p in storage.iterdir()) == ["early", "mid"]
    first, second = _check_exact(storage / "early"), _check_exact(storage / "mid")
    assert set(first["trial_id"]).isdisjoint(second["trial_id"])
    pd.testing.assert_frame_equal(_values(first), _values(second))  # determinism


def test_a_diverging_trial_is_flagged_and_the_others_are_unaffected(
    ray_session: Any, storage: Path
) -> None:
    """lr_sweep smoke, MSE loss: lr=1 blows up (loss inf by step 30), lr=0.01 does not."""
    out = io.StringIO()
    options = StudyOptions(
        space="lr_sweep", smoke=True, storage=str(storage),
        overrides=["loss=mse", f"total_steps={TOTAL}", f"eval_every={EVERY}"],
    )  # fmt: skip
    outcome = run_study(options, out=out)
    assert outcome.exit_code == 0, out.getvalue()
    assert outcome.counts == {"TERMINATED": 1, "DIVERGED": 1}
    assert "2/2 trials finished (1 diverged, 0 errored)" in out.getvalue()
    experiment = storage / "lr_sweep"
    trials = pd.read_parquet(experiment / "results" / "trials.parquet").set_index("lr")
    assert trials.loc[1.0, "status"] == "DIVERGED" and trials.loc[1.0, "diverged"]
    assert trials.loc[1.0, "step"] < TOTAL
    assert trials.loc[0.01, "status"] == "TERMINATED" and not trials.loc[0.01, "diverged"]
    assert trials.loc[0.01, "step"] == TOTAL and trials.loc[0.01, "train_loss"] < 10
    metrics = _check_exact(experiment, {"TERMINATED", "DIVERGED"})
    assert not metrics.loc[metrics["lr"] == 0.01, "diverged"].any()


def test_a_killed_driver_loses_no_checkpointed_work(
    ray_session: Any, storage: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 13, item 6. The driver is SIGKILLed right after a trial's first checkpoint, before
    Tune's next experiment snapshot records it (snapshots made rare here). Before the fix the
    restored trial started again from step 0; now it continues from that checkpoint."""
    address = ray_session.get_runtime_context().gcs_address
    monkeypatch.setenv("TUNE_GLOBAL_CHECKPOINT_S", "600")  # the snapshot: at the start only
    argv = ["--space", "smoke", "--storage", str(storage), "--max-concurrent", "1",
            "--checkpoint-every", "2", "--set", "total_steps=400", "--set", "eval_every=50"]  # fmt: skip
    log = tmp_path / "driver.log"
    driver = _driver(argv, log, address)
    experiment = storage / "smoke"
    try:
        deadline = time.time() + 180
        while True:
            assert driver.poll() is None, log.read_text()[-3000:]
            assert time.time() < deadline, "no checkpoint to kill the driver after"
            found = [
                c
                for c in experiment.glob("ilstudy_trial_*/checkpoint_*")
                if (c / "state.pt").exists() and (c / "rows.parquet").exists()
            ]
            if found:
                break
            time.sleep(0.005)
    finally:
        _kill_group(driver)
    trial_dir = found[0].parent
    assert _valid_state(experiment) is not None
    # Tune's snapshot names a checkpoint it knows in a result or its cloudpickled manager.
    state = sorted(experiment.glob("experiment_state-*.json"))[-1].read_text()
    assert "checkpoint_0" not in state and b"checkpoint_0".hex() not in state, (
        "too late: the snapshot already records the checkpoint"
    )

    monkeypatch.setenv("TUNE_GLOBAL_CHECKPOINT_S", "0.1")
    out = io.StringIO()
    again = run_study(StudyOptions(resume=True, name="smoke", storage=str(storage)), out=out)
    assert again.exit_code == 0, out.getvalue()
    metrics = pd.read_parquet(experiment / "results" / "metrics")
    assert not metrics.duplicated(["trial_id", "step"]).any()
    trials = pd.read_parquet(experiment / "results" / "trials.parquet").set_index("logdir")
    rows = metrics[metrics["trial_id"] == trials.loc[trial_dir.name, "trial_id"]]
    assert sorted(rows["step"]) == list(range(0, 401, 50))
    first = rows[rows["attempt"] == 0]["step"]
    assert set(rows["attempt"]) == {0, 1}, rows[["step", "attempt"]]  # continued, not redone
    assert sorted(first) == [0, 50]  # the 2 records of the first checkpoint


def test_checkpoint_staging_folders_of_dead_trials_are_removed(tmp_path: Path) -> None:
    """Issue 13, "Also": `ilstudy-ckpt-*` folders of a trial process killed mid-checkpoint
    stayed in the temp dir for ever. A live process's folder is kept."""
    from study.execute.trainable import remove_stale_checkpoint_dirs

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / f"ilstudy-ckpt-{dead.pid}-abc123").mkdir()
    (tmp_path / f"ilstudy-ckpt-{dead.pid}-abc123" / "state.pt").write_bytes(b"x" * 1000)
    (tmp_path / f"ilstudy-ckpt-{os.getpid()}-def456").mkdir()
    old = tmp_path / "ilstudy-ckpt-oldstyle"  # an older version's name: no pid
    old.mkdir()
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    (tmp_path / "unrelated").mkdir()
    removed = remove_stale_checkpoint_dirs(str(tmp_path))
    assert sorted(removed) == sorted(["ilstudy-ckpt-oldstyle", f"ilstudy-ckpt-{dead.pid}-abc123"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"ilstudy-ckpt-{os.getpid()}-def456",
        "unrelated",
    ]


# ---------------------------------------------------------------- issue 23: storage faults, SIGTERM

LONG = ["--set", "total_steps=120", "--set", "eval_every=10", "--checkpoint-every", "2"]
LONG_STEPS = list(range(0, 121, 10))
# Imported by every Python process of a driver (its embedded Ray's workers inherit the
# environment): once the flag file exists, every write that Python opens below the storage
# folder fails with the given errno, as on a full, read-only or forbidden disk. Root ignores
# chmod, and mounting a small disk needs privileges a test machine may not have.
_SITECUSTOMIZE = """
import builtins, os

_ROOT, _FLAG = os.environ["ILSTUDY_FAULT_ROOT"], os.environ["ILSTUDY_FAULT_FLAG"]
_ERRNO, _open = int(os.environ["ILSTUDY_FAULT_ERRNO"]), builtins.open


def _faulty_open(file, mode="r", *args, **kwargs):
    if (
        isinstance(file, (str, os.PathLike))
        and any(c in mode for c in "wax+")
        and os.fspath(file).startswith(_ROOT)
        and os.path.exists(_FLAG)
    ):
        raise OSError(_ERRNO, os.strerror(_ERRNO), os.fspath(file))
    return _open(file, mode, *args, **kwargs)


builtins.open = _faulty_open
"""


def _cli(argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`python -m study.run ARGV` with its own embedded Ray; stderr apart from stdout."""
    base = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS",)}
    base.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
    base.update(PYTHONUNBUFFERED="1", **(env or {}))
    with open(log, "ab") as out, open(log.with_suffix(".err"), "wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "study.run", *argv], cwd=REPO, env=base,
            stdout=out, stderr=err, start_new_session=True,
        )  # fmt: skip


def _stderr_lines(log: Path) -> list[str]:
    return [line for line in log.with_suffix(".err").read_text().splitlines() if line.strip()]


def _wait_for(condition: Any, process: subprocess.Popen, log: Path, what: str) -> None:
    deadline = time.time() + 180
    while not condition():
        assert process.poll() is None, (what, log.read_text()[-2000:], _stderr_lines(log))
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def unbroken(ray_session: Any, tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """The long smoke study run once without a fault, in this process: the reference."""
    storage = tmp_path_factory.mktemp("unbroken")
    overrides = ["total_steps=120", "eval_every=10"]
    options = StudyOptions(
        space="smoke", storage=str(storage), overrides=overrides, checkpoint_every=2
    )
    assert run_study(options, out=io.StringIO()).exit_code == 0
    metrics = pd.read_parquet(storage / "smoke" / "results" / "metrics")
    assert len(metrics) == 4 * len(LONG_STEPS)
    return metrics


def _resume_to_the_end(storage: Path, tmp_path: Path, address: str) -> pd.DataFrame:
    log = tmp_path / "final.log"
    final = _cli(["--resume", "--name", "smoke", "--storage", str(storage), "--address",
                  address], log)  # fmt: skip
    final.wait(timeout=240)
    assert final.returncode == 0, (log.read_text()[-3000:], _stderr_lines(log))
    metrics = pd.read_parquet(storage / "smoke" / "results" / "metrics")
    assert not metrics.duplicated(["trial_id", "step"]).any()
    return metrics


FAULTS = [(errno.ENOSPC, "the disk is full"), (errno.EROFS, "read-only"),
          (errno.EACCES, "permission denied")]  # fmt: skip


def _metric_writes(experiment: Path) -> dict[str, int]:
    """Each metrics file's modification time: a change is a write."""
    out = {}
    for file in (experiment / "results" / "metrics").glob("*.parquet"):
        with contextlib.suppress(OSError):
            out[file.name] = file.stat().st_mtime_ns
    return out


@pytest.mark.timeout(1200)
def test_storage_faults_mid_study_are_one_line_each_and_the_resumes_lose_nothing(
    ray_session: Any, unbroken: pd.DataFrame, storage: Path, tmp_path: Path
) -> None:
    """Before, a full disk printed 40 lines of Ray's and Tune's tracebacks and a read-only
    folder 91. One study meets a full disk, then (resumed) a read-only folder, then (resumed
    again) a forbidden one, each at the first metrics write of its run: each time exit 2, one
    line naming the path and the cause, the lock gone. Once the storage is writable again a
    last resume ends with every row of an unbroken run."""
    site, flag, experiment = tmp_path / "site", tmp_path / "storage-broken", storage / "smoke"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    for run, (code, cause) in enumerate(FAULTS):
        env = {"PYTHONPATH": f"{site}{os.pathsep}{REPO}", "ILSTUDY_FAULT_ROOT": str(storage),
               "ILSTUDY_FAULT_FLAG": str(flag), "ILSTUDY_FAULT_ERRNO": str(code)}  # fmt: skip
        log = tmp_path / f"driver{run}.log"
        argv = (["--space", "smoke", "--storage", str(storage), *LONG] if run == 0 else
                ["--resume", "--name", "smoke", "--storage", str(storage)])  # fmt: skip
        before = _metric_writes(experiment) if run else {}
        driver = _cli(argv, log, env)
        try:
            written = lambda before=before: _metric_writes(experiment) not in ({}, before)  # noqa: E731
            _wait_for(written, driver, log, f"a metrics write before {cause}")
            flag.touch()  # the storage breaks mid-study
            driver.wait(timeout=180)
        finally:
            _kill_group(driver)
        lines = _stderr_lines(log)
        assert driver.returncode == 2, (cause, lines, log.read_text()[-2000:])
        assert len(lines) == 1, (cause, lines)
        assert lines[0].startswith(f"error: cannot write {experiment}/"), lines
        assert os.strerror(code) in lines[0] and cause in lines[0], lines
        assert "--resume --name smoke" in lines[0]
        assert not (experiment / "study.lock").exists() and not list(experiment.glob("*.lock"))
        flag.unlink()  # the storage is fixed

    address = ray_session.get_runtime_context().gcs_address
    metrics = _resume_to_the_end(storage, tmp_path, address)
    pd.testing.assert_frame_equal(_values(metrics), _values(unbroken))


def _remove_live(folder: Path, within_s: float = 60) -> None:
    """`rm -rf` of a folder the running study still writes into, again until it is gone: a
    file written between rmtree's listing of a folder and its rmdir leaves that one non-empty
    (ENOTEMPTY), as it would for `rm -rf`."""
    deadline = time.time() + within_s
    while folder.exists():
        assert time.time() < deadline, f"{folder} kept coming back"
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.timeout(600)
def test_a_study_folder_that_vanishes_mid_study_is_one_line(
    ray_session: Any, storage: Path, tmp_path: Path
) -> None:
    log, experiment = tmp_path / "driver.log", storage / "smoke"
    driver = _cli(["--space", "smoke", "--storage", str(storage), *LONG], log)
    try:
        _wait_for(lambda: bool(_metric_writes(experiment)), driver, log, "a first metrics file")
        _remove_live(experiment)
        driver.wait(timeout=180)
    finally:
        _kill_group(driver)
    lines = _stderr_lines(log)
    assert driver.returncode == 2 and len(lines) == 1, (lines, log.read_text()[-2000:])
    assert "vanished" in lines[0] and str(experiment) in lines[0], lines


@pytest.mark.timeout(1500)
def test_sigterm_is_ctrl_c_at_random_moments_and_the_resumes_lose_nothing(
    ray_session: Any, unbroken: pd.DataFrame, storage: Path, tmp_path: Path
) -> None:
    """What schedulers and `kill` send. Before, the driver ended with exit 15 or 134 (a native
    dump). Now every SIGTERM: exit 143, one line on stderr, the lock removed. The first and
    every other one land at random moments inside Tune's loop (once Tune saved its state, or a
    trial reported), the others at random moments of a resume's start, Ray's start included;
    a last resume ends with every row of an unbroken run."""
    rng = random.Random(23)
    experiment = storage / "smoke"
    address = ray_session.get_runtime_context().gcs_address
    for run in range(5):
        log = tmp_path / f"run{run}.log"
        if run == 0:
            argv = ["--space", "smoke", "--storage", str(storage), *LONG]
        else:  # every other resume attaches to the shared Ray: ray.init's handlers differ
            attach = ["--address", address] if run % 2 else []
            argv = ["--resume", "--name", "smoke", "--storage", str(storage), *attach]
        driver = _cli(argv, log)
        try:
            if run == 0:
                _wait_for(lambda: _valid_state(experiment) is not None, driver, log, "a snapshot")
            elif run % 2 == 0:  # inside Tune's loop: once a trial reported again
                seen = _results_seen_by_tune(experiment)
                reported = lambda seen=seen: _results_seen_by_tune(experiment) > seen  # noqa: E731
                _wait_for(reported, driver, log, "a result")
            time.sleep(rng.uniform(0.0, 8.0 if run % 2 else 2.0))
            if driver.poll() is not None:  # the study ended first: nothing left to interrupt
                assert driver.returncode == 0, _stderr_lines(log)
                break
            os.kill(driver.pid, signal.SIGTERM)
            driver.wait(timeout=120)
        finally:
            _kill_group(driver)
        lines = _stderr_lines(log)
        if driver.returncode == 0:  # finished before the signal was handled
            break
        if driver.returncode == -signal.SIGTERM and not log.read_text() and not lines:
            continue  # the interpreter's first moments, before any code of ours: nothing written
        assert driver.returncode == 143, (run, lines, log.read_text()[-2000:])
        assert len(lines) == 1 and lines[0].startswith("interrupted by SIGTERM"), lines
        assert not [p for p in experiment.iterdir() if p.name.endswith("lock")], run
    metrics = _resume_to_the_end(storage, tmp_path, address)
    pd.testing.assert_frame_equal(_values(metrics), _values(unbroken))
