"""Where a study's results lie: a local folder or any pyarrow filesystem URI, read through one
filesystem layer, so the command line can reject bad locations fast.

A location with ``://`` (``file://``, ``s3://bucket/studies/NAME?endpoint_override=HOST:PORT&
scheme=http``, ``gs://``, ...) is opened with ``pyarrow.fs.FileSystem.from_uri``, query options
included; anything else is a local path. A remote store is reached once, within a time bound,
so an endpoint that is down is one error line, not minutes of retries.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ._errors import ReportError

StudyDir = str | Path  # a local folder, or a URI kept as the string it was given
REACH_TIMEOUT_S = 15.0  # opening and first reaching a remote store
T = TypeVar("T")


def is_uri(location: StudyDir) -> bool:
    """A pyarrow filesystem URI (``scheme://...``), not a local path."""
    return isinstance(location, str) and "://" in location


def as_study_dir(location: StudyDir) -> StudyDir:
    """A URI stays the string it is (pathlib would fold ``s3://`` into ``s3:/``); a local
    location becomes a Path."""
    return location if is_uri(location) else Path(location)


def is_local(location: StudyDir) -> bool:
    """On this machine's filesystem (a plain path or a ``file://`` URI)."""
    return locate(location).local


@dataclass(frozen=True)
class Place:
    """A file or folder on a pyarrow filesystem, and how messages name it."""

    fs: pafs.FileSystem
    path: str  # on `fs`
    shown: str  # the location as given, then '/part' per step down
    local: bool

    def __truediv__(self, part: str) -> Place:
        path = f"{self.path.rstrip('/')}/{part}"
        if self.local and not is_uri(self.shown):
            shown = str(Path(self.shown) / part)  # as pathlib names it, like before
        else:  # a URI's query options name the store, not the file: keep them out of the name
            shown = f"{self.shown.split('?', 1)[0].rstrip('/')}/{part}"
        return Place(self.fs, path, shown, self.local)

    def __str__(self) -> str:
        return self.shown

    @property
    def name(self) -> str:
        return PurePosixPath(self.path).name

    def kind(self) -> pafs.FileType:
        try:
            return self.fs.get_file_info(self.path).type
        except (OSError, pa.ArrowException) as exc:
            raise ReportError(f"{self.shown}: cannot be read ({_first_line(exc)})") from None

    def is_dir(self) -> bool:
        return self.kind() == pafs.FileType.Directory

    def is_file(self) -> bool:
        return self.kind() == pafs.FileType.File

    def exists(self) -> bool:
        return self.kind() != pafs.FileType.NotFound


_REMOTE: dict[str, tuple[pafs.FileSystem, str]] = {}  # URI → (filesystem, path), reached once
_LOCK = threading.Lock()


def locate(location: StudyDir) -> Place:
    """The filesystem and path of `location`; ReportError when the URI is not usable or its
    store cannot be reached within REACH_TIMEOUT_S."""
    if not is_uri(location):
        shown = str(location)
        path = os.path.abspath(os.path.expanduser(shown))
        return Place(pafs.LocalFileSystem(), path, shown, True)
    uri = str(location)
    parts = urlsplit(uri)
    if parts.password is not None:  # it would be printed in messages and summary.md
        raise ReportError(
            f"{parts.scheme}://...: credentials in the URI are refused (they would be printed); "
            "give them in the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, ...)"
        )
    with _LOCK:
        known = _REMOTE.get(uri)
    if known is None:
        try:
            fs, path = _bounded(lambda: pafs.FileSystem.from_uri(uri), uri)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError, ValueError) as exc:
            raise ReportError(f"{uri}: not a usable URI ({_first_line(exc)})") from None
        if fs.type_name != "local":
            try:  # reach the store now, within a bound: offline it would retry for minutes
                _bounded(lambda: fs.get_file_info(path.rstrip("/") or "/"), uri)
            except OSError as exc:
                raise ReportError(f"{uri}: cannot reach the store ({_first_line(exc)})") from None
        known = (fs, path.rstrip("/") or "/")
        with _LOCK:
            _REMOTE[uri] = known
    fs, path = known
    return Place(fs, path, uri, fs.type_name == "local")


def local_out(out: str | Path) -> Path:
    """The report's output folder, which is local: a URI is a ReportError (pathlib would
    turn ``s3://b/x`` into a local folder ``s3:/b/x``)."""
    if is_uri(out):
        raise ReportError(f"--out {out}: the report is written to a local folder, not a URI")
    return Path(out)


def study_name(location: StudyDir) -> str:
    """The study folder's name: the last component of its (resolved, when local) path."""
    if not is_uri(location):
        return Path(location).resolve().name
    return locate(location).name


def results_dir(location: StudyDir | Place) -> Place:
    """``location/results``, or `location` itself when it is the results folder."""
    place = location if isinstance(location, Place) else locate(location)
    kind = place.kind()
    if kind == pafs.FileType.NotFound:
        raise ReportError(f"{place}: no such folder")
    if kind != pafs.FileType.Directory:
        raise ReportError(f"{place}: not a folder (give a study folder that holds results/)")
    if (place / "results").is_dir():
        return place / "results"
    if place.name == "results" and any((place / n).exists() for n in ("metrics", "trials.parquet")):
        return place
    raise ReportError(f"{place}: no results/ folder here; is this a study folder?")


def metric_files(folder: Place) -> list[Place]:
    """The finished Parquet files of a metrics (or phases) dataset, skipping temporary and
    hidden ones, in path order.

    Writes are temp-file-then-rename, so names starting with '.' or '_' or ending in '.tmp'
    (at any depth) are unfinished or not data.
    """
    if not folder.is_dir():
        return []
    selector = pafs.FileSelector(folder.path, recursive=True, allow_not_found=True)
    try:
        infos = folder.fs.get_file_info(selector)
    except OSError as exc:
        raise ReportError(f"{folder}: cannot be listed ({_first_line(exc)})") from None
    base = folder.path.rstrip("/")
    found = []
    for info in infos:
        if info.type != pafs.FileType.File or not info.path.startswith(base + "/"):
            continue
        parts = tuple(info.path[len(base) + 1 :].split("/"))
        if any(p.startswith((".", "_")) or p.endswith(".tmp") for p in parts):
            continue
        if PurePosixPath(parts[-1]).suffix == ".parquet":
            found.append(parts)
    files = []
    for parts in sorted(found):  # by path components, as pathlib sorts
        place = folder
        for part in parts:
            place = place / part
        files.append(place)
    return files


def find_results(location: StudyDir) -> tuple[Place, list[Place], Place]:
    """(results folder, metrics files, trials.parquet); ReportError when there are none."""
    results = results_dir(location)
    files = metric_files(results / "metrics")
    trials_file = results / "trials.parquet"
    if not files and not trials_file.is_file():
        raise ReportError(f"{location}: no results yet (no Parquet files under {results})")
    return results, files, trials_file


def read_table(file: Place) -> pa.Table:
    """The Parquet file at `file`, read whole into Arrow-owned memory; ReportError when it is
    missing or not readable Parquet.

    Never hand Arrow a Python-owned buffer (``io.BytesIO``, ``bytes``): a reader thread that
    frees one needs the GIL, and during interpreter exit that aborts the process. A study's
    files are one small file per trial: decoding each on this thread is faster than handing
    its few column chunks to Arrow's thread pool, and ``ParquetFile`` reads one file without the
    dataset machinery that ``pq.read_table`` builds around it for every call.
    """
    try:
        with file.fs.open_input_file(file.path) as f:
            data = f.read_buffer()
        return pq.ParquetFile(pa.BufferReader(data)).read(use_threads=False)
    except (OSError, pa.ArrowException, ValueError) as exc:
        raise ReportError(f"{file}: not a readable Parquet file ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _bounded(fn: Callable[[], T], uri: str) -> T:
    """`fn()` within REACH_TIMEOUT_S; ReportError if it does not return in time.

    pyarrow's calls cannot be cancelled: the call runs in a daemon thread, left behind on a
    timeout (the command line exits right after the error).
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # re-raised in the caller
            box["error"] = exc

    thread = threading.Thread(target=target, name="reports: reach store", daemon=True)
    thread.start()
    thread.join(REACH_TIMEOUT_S)
    if thread.is_alive():
        raise ReportError(
            f"{uri}: the store did not answer within {REACH_TIMEOUT_S:.0f} s; check the "
            "endpoint, the network and the credentials"
        )
    if "error" in box:
        raise box["error"]
    return box["value"]
