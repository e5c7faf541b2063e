"""reports: a study read through pyarrow's filesystem layer, on an S3 store (moto's server on
loopback, as MinIO and Ceph users write it), a ``file://`` URI and a plain path, gives the same
report; a store that cannot be reached is one line, exit 2, quickly.

Nothing here reaches beyond 127.0.0.1.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow.fs as pafs
import pytest

from reports._errors import ReportError
from reports._paths import REACH_TIMEOUT_S, locate, metric_files, results_dir
from tests.reports.test_reports_stability import Trial, write_study

ROOT = Path(__file__).resolve().parents[2]
BUCKET, NAME = "bucket", "grid"
KEYS = {"access_key": "testing", "secret_key": "testing", "region": "us-east-1"}
# every table of the report whose content is not a path or a time
TABLES = ("fits.csv", "selected.csv", "stability.csv", "stability_trials.csv", "arms.csv")

moto_server = pytest.importorskip("moto.server")


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    """HOST:PORT of an S3 server on loopback, stopped after the module."""
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"{host}:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="module")
def local_study(tmp_path_factory) -> Path:
    """A small K × lr grid with phases files and one diverged trial, so the tuned view, the
    stability tables and the phases reader all have something to read."""
    trials = [Trial(k=k, lr=lr, seed=s, val_acc=0.8 + 0.01 * s - (0.02 if lr > 0.1 else 0),
                    diverge_at=60 if (k == 25 and lr == 0.2 and s == 0) else None)
              for k in (10, 25) for lr in (0.05, 0.2) for s in (0, 1)]  # fmt: skip
    return write_study(tmp_path_factory.mktemp("local"), NAME, trials)


def _s3(endpoint: str) -> pafs.S3FileSystem:
    return pafs.S3FileSystem(
        endpoint_override=endpoint, scheme="http", allow_bucket_creation=True, **KEYS
    )


@pytest.fixture(scope="module")
def s3_uri(endpoint: str, local_study: Path) -> str:
    """The local study copied to ``s3://bucket/studies/grid``, with unfinished and hidden files
    beside its data that a reader must skip (each is not Parquet: reading one is an error)."""
    s3 = _s3(endpoint)
    s3.create_dir(BUCKET)
    dest = f"{BUCKET}/studies/{NAME}"
    pafs.copy_files(str(local_study), dest, source_filesystem=pafs.LocalFileSystem(),
                    destination_filesystem=s3)  # fmt: skip
    for junk in ("results/metrics/.grid_9.parquet.tmp", "results/metrics/_tmp/x.parquet",
                 "results/phases/grid_9.parquet.tmp"):  # fmt: skip
        with s3.open_output_stream(f"{dest}/{junk}") as f:
            f.write(b"not parquet")
    return f"s3://{dest}?endpoint_override={endpoint}&scheme=http"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}  # loopback only
    return {**env, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg", "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing", "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_DEFAULT_REGION": "us-east-1", "NO_PROXY": "127.0.0.1,localhost"}  # fmt: skip


def run_reports(*args: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reports", *map(str, args), "--bootstrap", "20"],
                          capture_output=True, text=True, env=_env(), cwd=cwd, timeout=300)  # fmt: skip


def _tables(out: Path) -> dict[str, str]:
    return {name: (out / name).read_text() for name in TABLES if (out / name).is_file()}


@pytest.fixture(scope="module")
def local_report(local_study: Path, tmp_path_factory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("local_report")
    done = run_reports(local_study, "--out", out)
    assert done.returncode == 0, done.stderr
    tables = _tables(out)
    assert {"fits.csv", "selected.csv", "stability.csv"} <= set(tables)  # a comparison of these
    return tables


@pytest.mark.slow  # a report in a subprocess, against a server process
def test_a_study_on_s3_reports_as_the_same_study_read_locally(s3_uri, local_report, tmp_path):
    done = run_reports(s3_uri, "--out", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    assert _tables(tmp_path / "out") == local_report


@pytest.mark.slow  # a report in a subprocess
@pytest.mark.parametrize("form", ["file", "plain"])
def test_a_file_uri_and_a_plain_path_give_the_same_report(
    form, local_study, local_report, tmp_path
):
    study = local_study.as_uri() if form == "file" else local_study
    done = run_reports(study, "--out", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    assert _tables(tmp_path / "out") == local_report


@pytest.mark.slow  # a report in a subprocess, against a server process
def test_a_remote_study_without_out_reports_into_the_working_directory(s3_uri, tmp_path):
    done = run_reports(s3_uri, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = tmp_path / f"report-{NAME}"
    assert (out / "fits.csv").is_file() and (out / "summary.md").is_file()
    first = done.stdout.splitlines()[0]
    assert str(out) in first and "remote store" in first
    assert "bucket" not in {p.name for p in tmp_path.iterdir()}  # nothing like s3:/bucket/…


@pytest.mark.slow  # a report in a subprocess, against a server process
def test_local_and_s3_studies_side_by_side(s3_uri, local_study, tmp_path):
    """The same study twice is two studies (the second named by its location), in both orders."""
    for studies in ((local_study, s3_uri), (s3_uri, local_study)):
        out = tmp_path / f"cmp_{len(list(tmp_path.iterdir()))}"
        done = run_reports(*studies, "--out", out)
        assert done.returncode == 0, done.stderr
        studies_seen = set(pd.read_csv(out / "fits.csv")["study"])
        assert studies_seen == {NAME, f"{NAME} ({studies[1]})"}


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow  # a report in a subprocess, against a server process
def test_an_unreachable_store_is_one_line_exit_2_quickly(tmp_path):
    uri = f"s3://{BUCKET}/studies/{NAME}?endpoint_override=127.0.0.1:{_closed_port()}&scheme=http"
    start = time.monotonic()
    done = run_reports(uri, "--out", tmp_path / "out")
    took = time.monotonic() - start
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith(f"python -m reports: {uri}: ")
    assert "reach" in lines[0] or "did not answer" in lines[0]
    assert took < REACH_TIMEOUT_S + 20  # the bound, plus starting Python; no minutes of retries
    assert not (tmp_path / "out").exists() and done.stdout == ""


@pytest.mark.parametrize(
    "where, expected",
    [
        ("missing", "no such folder"),
        ("results", None),  # the results folder itself is a study location too
        ("bucket_root", "no results/ folder here"),
    ],
)
def test_s3_locations_are_checked_like_folders(s3_uri, where, expected):
    base, query = s3_uri.split("?")
    uri = {"missing": f"{base}_nowhere?{query}", "results": f"{base}/results?{query}",
           "bucket_root": f"s3://{BUCKET}/studies?{query}"}[where]  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        for key, value in _env().items():
            if key.startswith("AWS_"):
                mp.setenv(key, value)
        if expected is None:
            results = results_dir(uri)
            names = [f.name for f in metric_files(results / "metrics")]
            assert names == sorted(f"{NAME}_{i:05d}.parquet" for i in range(8))  # junk skipped
        else:
            with pytest.raises(ReportError, match=expected):
                results_dir(uri)


def test_an_out_uri_is_refused_before_anything_is_read(local_study, tmp_path):
    done = run_reports(local_study, "--out", "s3://bucket/reports", cwd=tmp_path)
    assert done.returncode == 2 and "not a URI" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "uri, expected",
    [
        ("s3://bucket/x?no_such_option=1", "not a usable URI"),
        ("nosuchscheme://bucket/x", "not a usable URI"),
        ("s3://AKID:hunter2@bucket/x", "credentials in the URI are refused"),
    ],
)
def test_unusable_uris_are_report_errors_naming_them(uri, expected):
    with pytest.raises(ReportError, match=expected) as info:
        locate(uri)
    assert "hunter2" not in str(info.value)
