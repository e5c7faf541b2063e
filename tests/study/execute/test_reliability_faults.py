"""Issue #5, faults: killed drivers, concurrent studies, determinism, divergence, loopback.

Drivers run as `python -m study.run` subprocesses attached to the shared test Ray (its GCS
address), except the first, which starts its own embedded Ray so that its listening sockets
can be checked. Each is killed with SIGKILL at a chosen point and resumed with `--resume`.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
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
