"""Bad input: exit 2, one line on stderr naming the problem, and nothing written."""

from __future__ import annotations

import json
import os
import pickle
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from study.run import main
from study.store.fs import SPEC_FILE

REPO = Path(__file__).resolve().parents[2]


def _refused(argv: list[str], capsys: pytest.CaptureFixture[str], storage: Path) -> str:
    """Run the CLI in-process; it must exit 2 with one line and leave storage untouched."""
    before = sorted(storage.rglob("*"))
    assert main([*argv, "--storage", str(storage)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ") and "Traceback" not in err
    assert sorted(storage.rglob("*")) == before
    return err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--space", "nope"], "unknown space 'nope'; allowed: k_sweep"),
        (["--space", "smoke", "--set", "nope=1"], "unknown config key 'nope'; allowed keys:"),
        (["--space", "smoke", "--set", "k=0"], "must be an int >= 1 or 'inf'"),
        (["--space", "smoke", "--set", "lr"], "expected key=value"),
        (["--space", "smoke", "--name", "../escape"], "--name '../escape' is not allowed"),
        (["--space", "smoke", "--name", "/abs/path"], "is not allowed"),
        (["--space", "smoke", "--name", "a/b"], "is not allowed"),
        (["--space", "smoke", "--name", ".hidden"], "is not allowed"),
        (["--space", "smoke", "--cpus-per-trial", "-1"], "--cpus-per-trial -1: must be"),
        (["--space", "smoke", "--gpus-per-trial", "-0.5"], "--gpus-per-trial -0.5: must be"),
        (["--space", "smoke", "--gpus-per-trial", "1.5"], "a fraction must be < 1"),
        (["--space", "smoke", "--num-samples", "0"], "--num-samples 0: must be an int >= 1"),
        (["--space", "optuna_lr_k", "--searcher", "grid"], "allowed: random, optuna"),
        (["--space", "smoke", "--searcher", "bayes"], "invalid choice: 'bayes'"),
        (["--space", "smoke", "--bogus"], "unrecognized arguments: --bogus"),
        (["--space", "smoke", "--retry-errored"], "--retry-errored applies to --resume"),
        (["--set", "k=1"], "--space is required"),
        (["--resume"], "--resume needs --name"),
        (["--space", "smoke", "--address", "ray://h:10001"], "Ray Client (ray://) is not"),
        (["--space", "smoke", "--address", "nohost"], "expected host:port"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str], storage: Path
) -> None:
    assert expected in _refused(argv, capsys, storage)


def test_unreachable_address_fails_within_seconds(
    capsys: pytest.CaptureFixture[str], storage: Path
) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    err = _refused(["--space", "smoke", "--address", f"127.0.0.1:{port}"], capsys, storage)
    assert time.monotonic() - t0 < 10
    assert "cannot reach a Ray cluster" in err and "ray start --head" in err


def test_resume_of_an_unknown_study_is_refused(
    capsys: pytest.CaptureFixture[str], storage: Path
) -> None:
    err = _refused(["--resume", "--name", "ghost"], capsys, storage)
    assert "no study 'ghost'" in err


def test_resume_with_different_options_is_refused(
    capsys: pytest.CaptureFixture[str], storage: Path
) -> None:
    study = storage / "s"
    study.mkdir()
    spec = {"format": 1, "space": "smoke", "searcher": "grid", "num_samples": 1,
            "overrides": {"total_steps": 20}, "data_dir": "/tmp/data"}  # fmt: skip
    (study / SPEC_FILE).write_text(json.dumps(spec))
    (study / "tuner.pkl").write_bytes(pickle.dumps({}))
    (study / "experiment_state-2026-01-01_00-00-00.json").write_text(
        json.dumps({"trial_data": [["{}", "{}"]], "runner_data": {}})
    )
    err = _refused(["--resume", "--name", "s", "--set", "total_steps=30"], capsys, storage)
    assert "created with --set total_steps=20, not total_steps=30" in err
    err = _refused(["--resume", "--name", "s", "--space", "k_sweep"], capsys, storage)
    assert "created with --space smoke, not k_sweep" in err
    err = _refused(["--resume", "--name", "s", "--num-samples", "3"], capsys, storage)
    assert "--num-samples" in err
    err = _refused(["--resume", "--name", "s", "--set", "data_dir=/elsewhere"], capsys, storage)
    assert "data_dir=/tmp/data, not /elsewhere" in err


@pytest.mark.ray
@pytest.mark.timeout(120)
def test_resources_beyond_the_cluster_are_refused(
    ray_session: object, capsys: pytest.CaptureFixture[str], storage: Path
) -> None:
    """The shared Ray has 2 CPUs and 1 (logical) GPU; Tune would wait for ever."""
    err = _refused(["--space", "smoke", "--gpus-per-trial", "2"], capsys, storage)
    assert "largest node has 2 CPUs and 1 GPUs" in err
    err = _refused(["--space", "smoke", "--cpus-per-trial", "3"], capsys, storage)
    assert "--cpus-per-trial 3" in err


def test_the_real_command_prints_one_line_and_lists_spaces(tmp_path: Path) -> None:
    """`python -m study.run` as a user runs it: no traceback on bad input; --list works."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    bad = subprocess.run(
        [sys.executable, "-m", "study.run", "--space", "smoke", "--set", "k=zero",
         "--storage", str(tmp_path / "s")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2
    err = bad.stderr.strip()
    assert err.startswith("error: --set k=zero: ") and "must be an int >= 1 or 'inf'" in err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "s").exists()
    listing = subprocess.run(
        [sys.executable, "-m", "study.run", "--list"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert listing.returncode == 0
    assert all(name in listing.stdout for name in ("k_sweep", "optuna_lr_k", "smoke"))


@pytest.mark.slow  # a subprocess importing the whole driver
def test_the_study_driver_imports_neither_torch_nor_sklearn() -> None:
    """The driver validates, schedules and writes Parquet; torch (3 s to import here) and
    scikit-learn load only in trial processes."""
    code = (
        "import sys, study.run, study.service, study.execute.tuner, study.execute.writer, study.plan; "
        "from study.service import prepare, StudyOptions; prepare(StudyOptions(space='k_sweep', "
        "storage=sys.argv[1])); print(sorted({'torch', 'sklearn'} & set(sys.modules)))"
    )
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            [sys.executable, "-c", code, tmp], capture_output=True, text=True, check=True
        )
    assert out.stdout.strip() == "[]"
