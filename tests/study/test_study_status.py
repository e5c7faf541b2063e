"""`python -m study.status`: counts, steps, best and lock of a real study, read from its files."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from study.service import StudyOptions, run_study
from study.status import main, status
from study.store.lock import LOCK_FILE, this_holder

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def smoke_storage(ray_session: object, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real smoke study (4 trials), shared by every test here; tests change only copies."""
    storage = tmp_path_factory.mktemp("status") / "studies"
    outcome = run_study(StudyOptions(space="smoke", storage=str(storage)), out=io.StringIO())
    assert outcome.exit_code == 0
    return storage


@pytest.fixture
def copy(smoke_storage: Path, tmp_path: Path) -> Path:
    """A copy of the smoke study's storage that a test may change."""
    target = tmp_path / "studies"
    shutil.copytree(smoke_storage, target)
    return target


def _metrics(storage: Path) -> pd.DataFrame:
    files = sorted((storage / "smoke" / "results" / "metrics").glob("*.parquet"))
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.ray
def test_a_finished_study_matches_its_parquet(smoke_storage: Path) -> None:
    view = status("smoke", str(smoke_storage))
    trials = pd.read_parquet(smoke_storage / "smoke" / "results" / "trials.parquet")
    rows = _metrics(smoke_storage)
    assert view["trials"]["by_status"] == trials["status"].value_counts().to_dict()
    assert view["trials"] == {"total": 4, "finished": 4, "by_status": {"TERMINATED": 4}}
    assert view["steps"]["done"] == rows.groupby("trial_id")["step"].max().sum() == 160
    assert view["steps"]["total"] == trials["total_steps"].sum()
    last = rows.sort_values("step").groupby("trial_id").tail(1)
    tops = last[last["val_acc"] == last["val_acc"].max()]  # the space's metric, mode max
    assert view["best"]["trial_id"] in set(tops["trial_id"])  # a few hundred examples: ties
    best = tops[tops["trial_id"] == view["best"]["trial_id"]].iloc[0]
    assert view["best"]["value"] == pytest.approx(best["val_acc"])
    assert view["best"]["config"] == {"k": best["k"]}
    assert view["best"]["metric"] == "val_acc" and not view["best"]["test_metric"]
    assert view["lock"]["state"] == "none"
    newest = max(p.stat().st_mtime for p in (smoke_storage / "smoke").rglob("*") if p.is_file())
    assert pd.Timestamp(view["last_write"]["at"]).timestamp() == pytest.approx(newest, abs=1)


@pytest.mark.ray
def test_a_study_in_progress_counts_what_its_files_hold(copy: Path) -> None:
    """One trial running at step 20 (its file at 10), one diverged at 20, one not created."""
    results = copy / "smoke" / "results"
    table = pq.read_table(results / "trials.parquet")
    trials = table.to_pandas()
    ids = sorted(trials["trial_id"])
    running, diverged, missing = ids[0], ids[1], ids[2]
    trials.loc[trials.trial_id == running, ["status", "step"]] = ["RUNNING", 20]
    trials.loc[trials.trial_id == diverged, ["status", "step"]] = ["DIVERGED", 20]
    trials.loc[trials.trial_id == running, "val_acc"] = 0.99  # the best, at its furthest record
    trials = trials[trials.trial_id != missing]
    pq.write_table(table.from_pandas(trials, schema=table.schema, preserve_index=False),
                   results / "trials.parquet")  # fmt: skip
    (results / "metrics" / f"{missing}.parquet").unlink()
    for trial_id in (running, diverged):
        path = results / "metrics" / f"{trial_id}.parquet"
        part = pq.read_table(path)
        pq.write_table(part.filter(pd.Series(part["step"].to_pylist()).le(10).to_numpy()), path)
    view = status("smoke", str(copy))
    assert view["trials"]["by_status"] == {
        "DIVERGED": 1, "NOT_STARTED": 1, "RUNNING": 1, "TERMINATED": 1,
    }  # fmt: skip
    assert view["trials"]["total"] == 4 and view["trials"]["finished"] == 2
    assert view["steps"] == {"done": 40 + 20 + 20, "total": 160, "ended_early": 20}
    assert view["best"]["trial_id"] == running and view["best"]["step"] == 20
    assert view["best"]["value"] == pytest.approx(0.99)


@pytest.mark.ray
def test_the_lock_shows_held_stale_or_elsewhere(copy: Path, capsys) -> None:
    lock = copy / "smoke" / LOCK_FILE
    holder = this_holder("python -m study.run --space smoke")  # this test's own live process
    lock.write_text(json.dumps(holder))
    view = status("smoke", str(copy))
    assert view["lock"]["state"] == "held" and view["lock"]["holder"]["pid"] == os.getpid()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(json.dumps({**holder, "pid": dead.pid}))
    assert status("smoke", str(copy))["lock"]["state"] == "stale"
    lock.write_text(json.dumps({**holder, "host": socket.gethostname() + "-elsewhere"}))
    assert status("smoke", str(copy))["lock"]["state"] == "held_elsewhere"
    lock.write_text("")
    assert status("smoke", str(copy))["lock"]["state"] == "unreadable"
    lock.write_text(json.dumps({**holder, "pid": dead.pid}))
    code, out, _ = _run(["smoke", "--storage", str(copy)], capsys)
    assert code == 0 and f"lock     stale: left by pid {dead.pid}" in out
    assert "4/4 finished: 4 TERMINATED" in out and "160/160" in out


@pytest.mark.ray
def test_bad_input_is_one_line_and_exit_2(copy: Path, capsys) -> None:
    code, out, err = _run(["nosuch", "--storage", str(copy)], capsys)
    assert code == 2 and not out and err.count("\n") == 1 and "no study 'nosuch'" in err
    code, _, err = _run(["../smoke", "--storage", str(copy)], capsys)
    assert code == 2 and err.count("\n") == 1
    (copy / "smoke" / "results" / "trials.parquet").write_bytes(b"not parquet")
    code, _, err = _run(["smoke", "--storage", str(copy)], capsys)
    assert code == 2 and err.count("\n") == 1 and "trials.parquet is unreadable" in err
    (copy / "smoke" / "study.json").write_text("{")
    code, _, err = _run(["smoke", "--storage", str(copy)], capsys)
    assert code == 2 and err.count("\n") == 1 and "study.json is unreadable" in err


@pytest.mark.ray
def test_the_command_imports_neither_ray_nor_torch(smoke_storage: Path) -> None:
    code = (
        "import sys; from study.status import main; rc = main(sys.argv[1:]); "
        "print(sorted({'ray', 'torch'} & set(sys.modules)), file=sys.stderr); sys.exit(rc)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, "smoke", "--storage", str(smoke_storage), "--json"],
        capture_output=True, text=True, cwd=ROOT, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "[]"
    assert json.loads(done.stdout)["trials"]["finished"] == 4


# ---- clean exits -----------------------------------------------------------------------
def test_no_parquet_reader_hands_arrow_a_python_buffer() -> None:
    """An Arrow worker that frees a Python-owned buffer needs the GIL; during interpreter
    finalisation it is ended inside a C++ destructor and the process aborts (SIGABRT) after
    printing its answer. Every reader of study/ and reports/ must give Arrow its own memory
    (study.store.fs.read_parquet, or a path), never an io.BytesIO or bytes."""
    import ast

    offenders = []
    for package in ("study", "reports"):
        for source in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(source.read_text())):
                if not isinstance(node, ast.Call):
                    continue
                name = getattr(node.func, "attr", getattr(node.func, "id", ""))
                if name in ("BytesIO", "py_buffer"):
                    offenders.append(f"{source.relative_to(ROOT)}:{node.lineno} {name}")
    assert not offenders, offenders


@pytest.mark.slow
def test_the_read_only_commands_never_abort_at_exit_beside_busy_processes(
    smoke_storage: Path, tmp_path: Path
) -> None:
    """The abort was a race with interpreter exit, seen only under load: run the commands that
    read a study many times, several at once, beside two busy processes."""
    burn = "import time\nend = time.time() + 120\nwhile time.time() < end: pass"
    burners = [subprocess.Popen([sys.executable, "-c", burn]) for _ in range(2)]
    status_cmd = [sys.executable, "-m", "study.status", "smoke", "--storage", str(smoke_storage),
                  "--json"]  # fmt: skip
    failures: list[str] = []
    try:
        for _ in range(8):
            runs = [subprocess.Popen(status_cmd, cwd=ROOT, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True) for _ in range(5)]  # fmt: skip
            for run in runs:
                _, err = run.communicate(timeout=120)
                if run.returncode != 0 or "terminate called" in err:
                    failures.append(f"rc={run.returncode}: {err.strip()[-200:]}")
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
    assert not failures, failures
