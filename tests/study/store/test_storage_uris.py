"""Issue 23, item 7: a study on a local folder, named as a ``file://`` URI and as a plain path,
and on S3 with endpoint options (``s3://bucket/studies?endpoint_override=HOST:PORT&scheme=http``,
as MinIO and Ceph users write it) is run, interrupted, resumed, shown by ``study.status`` and
reported, each by its command line, and ends with the rows of an unbroken run.

Before the fix the S3 resume dropped the query options and asked AWS itself ("AWS Error
NETWORK_CONNECTION during HeadBucket", exit 1). S3 is moto's server on loopback, one per module;
nothing here reaches beyond 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd
import pyarrow.fs as pafs
import pytest

from study.errors import StudyError
from study.service import StudyOptions, run_study
from study.store.fs import Storage, StudyPaths, resolve_storage
from tests.study.execute.test_reliability_faults import _check_exact, _values

REPO = Path(__file__).resolve().parents[3]
BUCKET, NAME = "bucket", "smoke"
# Any credentials do for moto; a missing metadata service is not asked (no network).
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    """HOST:PORT of an S3 server on loopback with an empty bucket, stopped after the module."""
    moto_server = pytest.importorskip("moto.server")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        s3 = pafs.S3FileSystem(
            endpoint_override=f"{host}:{port}",
            scheme="http",
            allow_bucket_creation=True,
            access_key="testing",
            secret_key="testing",
            region="us-east-1",
        )
        s3.create_dir(BUCKET)
        yield f"{host}:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="module")
def unbroken(ray_session: Any, tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """The metric values of the same study run without a break, on a local folder."""
    storage = tmp_path_factory.mktemp("unbroken")
    out = io.StringIO()
    assert run_study(StudyOptions(space=NAME, storage=str(storage)), out=out).exit_code == 0, (
        out.getvalue()
    )
    return _values(_check_exact(storage / NAME))


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and k != "RAY_ADDRESS"}
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)  # the CLI sets loopback itself
    return {**env, **AWS_ENV, "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg",
            "NO_PROXY": "127.0.0.1,localhost"}  # fmt: skip


def _start(argv: list[str], log: Path) -> subprocess.Popen:
    """`python ARGV` from the repository, its output in `log`, in its own session."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, *argv], cwd=REPO, env=_env(), stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def _run(argv: list[str], log: Path, timeout: float = 300) -> tuple[int, str]:
    process = _start(argv, log)
    try:
        process.wait(timeout=timeout)
    finally:
        _kill_group(process)
    return process.returncode, log.read_text()


def _kill_group(process: subprocess.Popen) -> None:
    """What the driver left (an embedded Ray's daemons), once it has ended or timed out."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def _results_seen(paths: StudyPaths) -> int:
    """Trials whose result.json Tune has written to, read through the study's filesystem."""
    fs = paths.storage.fs
    try:
        folders = fs.get_file_info(pafs.FileSelector(paths.experiment, allow_not_found=True))
        files = [f"{f.path}/result.json" for f in folders if f.type == pafs.FileType.Directory]
        return sum(1 for info in fs.get_file_info(files) if (info.size or 0) > 0)
    except OSError:  # a listing while the driver creates the folders
        return 0


def _local_copy(paths: StudyPaths, into: Path) -> Path:
    """The study folder on a local disk (itself when local), for the row-by-row checks."""
    if paths.storage.is_local:
        return Path(paths.experiment)
    copy = into / NAME
    pafs.copy_files(
        paths.experiment,
        str(copy),
        source_filesystem=paths.storage.fs,
        destination_filesystem=pafs.LocalFileSystem(),
    )
    return copy


@pytest.mark.slow  # drivers, a status and a report in subprocesses, an S3 server
@pytest.mark.timeout(900)  # a hang guard: Ray and a server on a loaded machine
@pytest.mark.parametrize(
    ("scheme", "stop"),
    [("local", signal.SIGINT), ("s3", signal.SIGINT), ("s3", signal.SIGKILL)],
    ids=["local-sigint", "s3-sigint", "s3-sigkill"],
)
def test_a_study_runs_is_interrupted_resumes_and_reports_on_each_storage(
    scheme: str,
    stop: signal.Signals,
    endpoint: str,
    unbroken: pd.DataFrame,
    ray_session: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ctrl+C (exit 130) or SIGKILL (its lock left behind, stale) at the first result,
    `--resume` (exit 0), `study.status` (exit 0), the report command the resume printed
    (exit 0); every step stored once, with the unbroken run's values. The local study is run
    and shown as ``file://`` and resumed as a plain path: one study, however it is spelled. S3
    drivers start their own embedded Ray, whose workers get the credentials from the driver's
    environment; the local ones attach to the test Ray."""
    for key, value in AWS_ENV.items():
        monkeypatch.setenv(key, value)
    local = tmp_path / "studies"
    if scheme == "s3":
        folder = f"{BUCKET}/studies-{stop.name.lower()}"  # one study per case on the server
        storage = resumed = f"s3://{folder}?endpoint_override={endpoint}&scheme=http"
        attach = []
    else:
        storage, resumed = local.as_uri(), str(local)
        attach = ["--address", ray_session.get_runtime_context().gcs_address]
    paths = StudyPaths(resolve_storage(storage), NAME)
    common = ["-m", "study.run", *attach]

    first = _start([*common, "--space", NAME, "--storage", storage], tmp_path / "first.log")
    try:
        deadline = time.monotonic() + 240
        while _results_seen(paths) == 0 and first.poll() is None:
            assert time.monotonic() < deadline, (tmp_path / "first.log").read_text()[-3000:]
            time.sleep(0.1)
        first.send_signal(stop)
        first.wait(timeout=240)
    finally:
        _kill_group(first)  # after a SIGKILL: the embedded Ray's daemons and workers
    out = (tmp_path / "first.log").read_text()
    if stop == signal.SIGINT:
        assert first.returncode == 130 and "interrupted; continue with" in out, out[-3000:]
    else:
        assert first.returncode == -signal.SIGKILL, out[-3000:]

    code, out = _run([*common, "--resume", "--name", NAME, "--storage", resumed],
                     tmp_path / "resume.log")  # fmt: skip
    assert code == 0 and "4/4 trials finished" in out, out[-3000:]
    assert "HeadBucket" not in out and "amazonaws" not in out

    code, out = _run(
        ["-m", "study.status", NAME, "--storage", storage, "--json"], tmp_path / "status.log"
    )
    assert code == 0, out[-3000:]
    shown = json.loads(out)
    assert shown["trials"]["finished"] == shown["trials"]["total"] == 4
    assert shown["path"] == paths.display(paths.experiment)

    # The report command exactly as the resume printed it, query options and quoting included.
    report = next(line for line in (tmp_path / "resume.log").read_text().splitlines()
                  if line.startswith("report:  python -m reports "))  # fmt: skip
    words = shlex.shlex(report.removeprefix("report:  python "), posix=True, punctuation_chars=True)
    words.whitespace_split = True  # and split at '&', ';', '|' as a shell would
    argv = list(words)
    code, out = _run([*argv, "--out", str(tmp_path / "report"), "--bootstrap", "20"],
                     tmp_path / "report.log")  # fmt: skip
    assert code == 0, out[-3000:]
    assert (tmp_path / "report" / "summary.md").is_file()

    copy = _local_copy(paths, tmp_path / "copy")
    pd.testing.assert_frame_equal(_values(_check_exact(copy)), unbroken)
    if scheme == "s3":  # nothing of the study landed on the local disk
        assert not local.exists() and not (REPO / "s3:").exists()
        assert str(PurePosixPath(paths.experiment).parent) == folder


def test_a_remote_study_prints_its_paths_with_the_uri_query_options() -> None:
    """Without `endpoint_override` a printed path names another store (AWS itself): before the
    fix `display` dropped the query, and the report command the driver printed read nothing."""
    s3 = pafs.S3FileSystem(endpoint_override="127.0.0.1:9", scheme="http", access_key="a",
                           secret_key="b", region="us-east-1")  # fmt: skip  # connects to nothing
    query = "endpoint_override=127.0.0.1:9&scheme=http"
    paths = StudyPaths(Storage(f"s3://{BUCKET}/studies?{query}", s3, f"{BUCKET}/studies"), NAME)
    assert paths.display(paths.experiment) == f"s3://{BUCKET}/studies/{NAME}?{query}"
    assert paths.display(paths.metrics + "/") == (
        f"s3://{BUCKET}/studies/{NAME}/results/metrics/?{query}"
    )


def test_credentials_in_a_storage_uri_are_refused_without_printing_them() -> None:
    """They would be printed in the resume command and pickled into Tune's files on the store
    with the filesystem built from the URI; refused before anything is reached."""
    with pytest.raises(StudyError, match="credentials in the URI are refused") as info:
        resolve_storage(f"s3://AKIDEXAMPLE:hunter2@{BUCKET}/studies?scheme=http")
    assert "hunter2" not in str(info.value) and "AKIDEXAMPLE" not in str(info.value)
