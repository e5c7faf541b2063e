"""Issue #5, bad input and security: exit 2, one line, no traceback, storage untouched.

The cases not already in tests/study/test_study_cli.py. All run the CLI's `main(argv)` in-process
and need no Ray: validation happens before Ray is started.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from study.run import main
from tests.study.test_study_smoke import _tree

pytestmark = pytest.mark.timeout(120)


def _refused(argv: list[str], capsys: pytest.CaptureFixture[str], root: Path) -> str:
    """main(argv) exits 2 with one `error:` line; nothing under `root` changes (names, sizes,
    mtimes)."""
    before = _tree(root)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ") and "Traceback" not in err
    assert _tree(root) == before
    return err


@pytest.fixture
def populated(storage: Path) -> Path:
    """Storage holding another study's files, so "untouched" is checked against content."""
    other = storage / "other" / "results"
    other.mkdir(parents=True)
    (other / "trials.parquet").write_bytes(b"PAR1 stand-in")
    (storage / "other" / "study.json").write_text(json.dumps({"format": 1}))
    return storage


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["k=abc"], "--set k=abc: "),
        (["lr=-1"], "lr"),
        (["total_steps=0"], "total_steps"),
        (["batch_size=-3"], "batch_size"),
        (["damping=-1"], "damping"),
        (["dataset=imagenet"], "dataset"),
    ],
)
def test_bad_config_values_are_refused(
    overrides: list[str], expected: str, populated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--space", "smoke", "--storage", str(populated)]
    for item in overrides:
        argv += ["--set", item]
    err = _refused(argv, capsys, populated.parent)
    assert expected in err
    assert "must" in err or "allowed" in err or "expected" in err, err  # says what is allowed


def test_missing_torchvision_data_is_refused_before_anything_is_created(
    populated: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before the fix the study folder was created and every trial errored (exit 1)."""
    data = tmp_path / "no-data"
    argv = ["--space", "smoke", "--storage", str(populated), "--set", "dataset=mnist",
            "--set", f"data_dir={data}"]  # fmt: skip
    err = _refused(argv, capsys, tmp_path)
    assert "dataset=mnist: files not found under" in err and "download=true" in err
    assert not (populated / "smoke").exists() and not data.exists()


def test_unusable_storage_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A storage path whose parent is a file cannot be created."""
    (tmp_path / "afile").write_text("x")
    err = _refused(
        ["--space", "smoke", "--storage", str(tmp_path / "afile" / "studies")], capsys, tmp_path
    )
    assert "--storage" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["--space", "../x"],
        ["--space", "/etc/passwd"],
        ["--space", "a/b"],
        ["--space", "smoke", "--name", "../x"],
        ["--space", "smoke", "--name", "/tmp/abs"],
        ["--space", "smoke", "--name", "a/../../b"],
        ["--resume", "--name", "../other"],
    ],
)
def test_user_names_cannot_escape_the_storage_folder(
    argv: list[str], populated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _refused([*argv, "--storage", str(populated)], capsys, populated.parent)
    assert "not allowed" in err or "unknown space" in err


def test_resume_of_a_missing_study_names_it(
    populated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _refused(["--resume", "--name", "ghost", "--storage", str(populated)], capsys, populated)
    assert "no study 'ghost'" in err


@pytest.mark.parametrize("content", [b"", b'{"trial_data": [', b"\x80\x04 not json"])
def test_resume_of_a_study_with_broken_state_names_the_file(
    content: bytes, populated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Empty, truncated or non-JSON experiment state: exit 2 naming it, results untouched."""
    study = populated / "other"
    (study / "tuner.pkl").write_bytes(b"\x80\x04N.")  # pickle of None
    state = study / "experiment_state-2026-01-01_00-00-00.json"
    state.write_bytes(content)
    err = _refused(["--resume", "--name", "other", "--storage", str(populated)], capsys, populated)
    assert state.name in err and "cannot resume" in err
    assert os.path.getsize(study / "results" / "trials.parquet") > 0


@pytest.mark.ray
def test_a_node_that_does_not_answer_the_storage_probe_is_named(
    ray_session: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, the probe's GetTimeoutError escaped as a traceback from `python -m study.run`."""
    import study.execute.cluster as cluster
    from study.errors import StudyError

    monkeypatch.setattr(cluster, "PROBE_TIMEOUT_S", 0.0)
    monkeypatch.setattr(ray_session, "wait", lambda refs, **kw: ([], refs))
    with pytest.raises(StudyError, match=r"node\(s\) .* did not answer the shared-storage check"):
        cluster._nodes_not_seeing(str(tmp_path), cluster.alive_nodes())


# ---------------------------------------------------------------- issue 13: inputs and damage


def _resumable(storage: Path, name: str = "s") -> Path:
    """A study folder that passes the resume checks up to trials.parquet (no Ray needed)."""
    study = storage / name
    (study / "results").mkdir(parents=True)
    spec = {"format": 1, "space": "smoke", "searcher": "grid", "num_samples": 1}
    (study / "study.json").write_text(json.dumps(spec))
    (study / "tuner.pkl").write_bytes(b"\x80\x04N.")  # pickle of None
    (study / "experiment_state-2026-01-01_00-00-00.json").write_text(
        json.dumps({"trial_data": [["{}", "{}"]], "runner_data": {}})
    )
    return study


@pytest.mark.parametrize(
    "content", [b"", b"PAR1\x00\x00", b"\x13\x37 garbage " * 20, "truncated"], ids=repr
)
def test_a_damaged_trials_file_is_named_on_resume(
    content: bytes | str, storage: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: an ArrowInvalid traceback."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    trials = _resumable(storage) / "results" / "trials.parquet"
    if content == "truncated":
        pq.write_table(pa.table({"trial_id": ["a"] * 100, "status": ["TERMINATED"] * 100}), trials)
        content = trials.read_bytes()[:-40]
    trials.write_bytes(content)
    err = _refused(["--resume", "--name", "s", "--storage", str(storage)], capsys, storage)
    assert f"{trials} is unreadable" in err


@pytest.mark.parametrize("payload", ["[1, 2]", '"text"', "3", "null"])
def test_a_study_json_that_is_not_an_object_is_named(
    payload: str, storage: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: `[1,2]` gave an AttributeError traceback."""
    study = _resumable(storage)
    (study / "study.json").write_text(payload)
    err = _refused(["--resume", "--name", "s", "--storage", str(storage)], capsys, storage)
    assert "study.json" in err and "not a study description" in err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--cpus-per-trial", "0.00001"], "--cpus-per-trial 1e-05: Ray's resolution is 0.0001"),
        (["--gpus-per-trial", "0.33333"], "--gpus-per-trial 0.33333: Ray's resolution"),
        (["--name", ""], "--name '' is not allowed"),
        (["--storage", "mock:///studies"], "scheme 'mock' is not supported"),
        (["--storage", "foo://bucket/x"], "scheme 'foo' is not supported"),
        (["--storage", "hdfs://localhost:1/x"], "--storage 'hdfs://localhost:1/x'"),
    ],
)
def test_inputs_that_crashed_after_creating_the_study_are_refused_up_front(
    argv: list[str], expected: str, storage: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: Ray's precision traceback (items 8), the space's name silently (14), a
    traceback (mock://) and 89 lines of JVM output (hdfs://) (13)."""
    if "--storage" not in argv:
        argv = [*argv, "--storage", str(storage)]
    err = _refused(["--space", "smoke", *argv], capsys, storage.parent)
    assert expected in err
    assert not (storage / "smoke").exists()


def test_an_unreachable_storage_uri_is_refused_within_its_time_bound(
    storage: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An offline gs:// bucket hung for over 120 s, silently. Here (no network, or a bucket
    that does not exist) it ends within the bound, with one line."""
    import time

    import study.store.fs as storage_module

    monkeypatch.setattr(storage_module, "STORAGE_TIMEOUT_S", 3.0)
    t0 = time.monotonic()
    err = _refused(
        ["--space", "smoke", "--storage", "gs://ilstudy-no-such-bucket-4f1c/studies"],
        capsys,
        storage,
    )
    assert time.monotonic() - t0 < 10
    assert "did not answer within 3 s" in err or "cannot be reached" in err, err


def test_bounded_storage_calls_give_up_and_say_so(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    import study.store.fs as storage_module
    from study.errors import StudyError

    monkeypatch.setattr(storage_module, "STORAGE_TIMEOUT_S", 0.2)
    with pytest.raises(StudyError, match="did not answer within 0 s"):
        storage_module._bounded(lambda: time.sleep(5), "gs://x")
    assert storage_module._bounded(lambda: 7, "gs://x") == 7


def test_unwritable_storage_is_refused_before_anything_starts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Before: Errno 30 / 13 tracebacks after Ray had started. /sys refuses new folders even
    to root, as a read-only mount would."""
    root = Path("/sys/ilstudy-unwritable")
    assert main(["--space", "smoke", "--storage", str(root)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(f"error: --storage {root} is not writable"), err
    assert not root.exists()


def test_a_live_port_that_is_not_ray_is_refused_within_seconds(
    storage: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: `ray.init` against a plain HTTP server hung for ever and ignored SIGTERM."""
    import http.server
    import threading
    import time

    class Quiet(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        t0 = time.monotonic()
        argv = ["--space", "smoke", "--address", f"127.0.0.1:{server.server_port}"]
        err = _refused([*argv, "--storage", str(storage)], capsys, storage)
        assert time.monotonic() - t0 < 10
        assert "is not a Ray cluster's GCS" in err
    finally:
        server.shutdown()


@pytest.mark.ray
def test_the_ray_gcs_passes_the_address_probe(ray_session: Any) -> None:
    from study.execute.cluster import check_reachable

    check_reachable(ray_session.get_runtime_context().gcs_address)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--grace-period", "-1"], "--grace-period -1: must be"),
        (["--reduction-factor", "0.5"], "--reduction-factor 0.5: must be a number > 1"),
        (["--scheduler", "fifo", "--reduction-factor", "1"], "--reduction-factor 1.0: must be"),
    ],
)
def test_bad_scheduler_values_are_refused_whatever_the_scheduler(
    argv: list[str], expected: str, storage: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """They ran a FIFO study with exit 0: a value that is bad is bad input even where unused."""
    err = _refused(["--space", "smoke", "--storage", str(storage), *argv], capsys, storage.parent)
    assert expected in err
    assert not (storage / "smoke").exists()


@pytest.mark.parametrize("content", ["", 'name = "x"\ndescription = "nothing to run"\n'])
def test_a_space_file_that_defines_no_trials_is_refused(
    content: str, storage: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An empty file ran one trial at every default, with exit 0."""
    path = tmp_path / "empty.toml"
    path.write_text(content)
    err = _refused(["--space", str(path), "--storage", str(storage)], capsys, storage.parent)
    assert "defines no trials" in err
