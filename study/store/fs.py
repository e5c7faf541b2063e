"""Study names, storage locations, the files of one study, and atomic writes: the one writer
of atomic files (Parquet, JSON, bytes) and the one reader of Parquet."""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from study.errors import StudyError

# A name is one path component: letters, digits, '_', '-', '.'; no leading '.', no '..'.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")

SPEC_FILE = "study.json"  # what the study remembers: space, overrides, searcher, ...
RESULTS_DIR = "results"
# URI schemes a study may use: pyarrow.fs opens them and Tune can store an experiment there
# (pyarrow's mock:// is an in-process test filesystem that other processes cannot see).
URI_SCHEMES = ("file", "s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss")
STORAGE_TIMEOUT_S = 15.0  # opening and reaching a storage URI
T = TypeVar("T")


def check_name(name: str, what: str = "--name") -> str:
    """`name` if it is a safe single path component; StudyError otherwise."""
    if not _NAME.fullmatch(name or "") or ".." in name:
        raise StudyError(
            f"{what} {name!r} is not allowed: use 1-100 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit (no path separators, no '..')"
        )
    return name


@dataclass(frozen=True)
class Storage:
    """Where studies live: a local directory or a pyarrow-fs URI (s3://, gs://, ...)."""

    uri: str  # what Ray's RunConfig(storage_path) gets: absolute path or URI
    fs: pafs.FileSystem
    root: str  # the same place as a path on `fs`

    @property
    def is_local(self) -> bool:
        return self.fs.type_name == "local"


def resolve_storage(storage: str) -> Storage:
    """Parse `--storage`; a local path becomes absolute. Creates nothing."""
    if not storage:
        raise StudyError(
            "--storage is empty: give a directory or a URI such as s3://bucket/studies"
        )
    if "://" in storage:
        scheme = storage.split("://", 1)[0].lower()
        if scheme not in URI_SCHEMES:
            raise StudyError(
                f"--storage {storage!r}: scheme {scheme!r} is not supported; allowed: a local "
                f"directory or a URI with {', '.join(s + '://' for s in URI_SCHEMES)}"
            )
        if urlsplit(storage).password is not None:
            # The URI is printed (resume and report commands) and the filesystem built from it
            # is pickled into Tune's files on the store, credentials included.
            raise StudyError(
                f"--storage {scheme}://...: credentials in the URI are refused (they would be "
                "printed and stored with the study); give them in the environment "
                "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, ...)"
            )
        try:
            fs, root = _bounded(lambda: pafs.FileSystem.from_uri(storage), storage)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError, ValueError) as exc:
            raise StudyError(
                f"--storage {storage!r} is not a usable URI ({_first_line(exc)}); allowed: a "
                f"local directory or a URI with {', '.join(s + '://' for s in URI_SCHEMES)}"
            ) from None
        if fs.type_name == "local":
            return Storage(uri=os.path.abspath(root), fs=fs, root=os.path.abspath(root))
        try:  # reach the store now, within a time bound: offline it would hang for minutes
            _bounded(lambda: fs.get_file_info(root.rstrip("/") or "/"), storage)
        except OSError as exc:
            raise StudyError(
                f"--storage {storage!r} cannot be reached ({_first_line(exc)}); check the "
                "network and credentials"
            ) from None
        return Storage(uri=storage.rstrip("/"), fs=fs, root=root.rstrip("/"))
    root = os.path.abspath(os.path.expanduser(storage))
    if os.path.exists(root) and not os.path.isdir(root):
        raise StudyError(f"--storage {storage!r} is a file, not a directory")
    existing = root
    while not os.path.exists(existing):  # the nearest ancestor that exists must be a folder
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise StudyError(
            f"--storage {storage!r} cannot be created: {existing} is a file; "
            "give a directory, or a path whose parents are directories"
        )
    return Storage(uri=root, fs=pafs.LocalFileSystem(), root=root)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null: libhdfs's JVM writes its logging there directly."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _bounded(fn: Callable[[], T], storage: str) -> T:
    """`fn()` within STORAGE_TIMEOUT_S, quietly; StudyError if it does not return in time.

    The call runs in a daemon thread, which is left behind on a timeout (pyarrow's calls
    cannot be cancelled); the CLI exits right after the error.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # re-raised in the caller
            box["error"] = exc

    with _quiet_stderr():
        thread = threading.Thread(target=target, name="storage check", daemon=True)
        thread.start()
        thread.join(STORAGE_TIMEOUT_S)
    if thread.is_alive():
        raise StudyError(
            f"--storage {storage!r} did not answer within {STORAGE_TIMEOUT_S:.0f} s; check the "
            "network, the credentials and the URI"
        )
    if "error" in box:
        raise box["error"]
    return box["value"]


@dataclass(frozen=True)
class StudyPaths:
    """The files of one study, all under `<storage>/<name>/`."""

    storage: Storage
    name: str

    def _join(self, *parts: str) -> str:
        return str(PurePosixPath(self.storage.root, self.name, *parts))

    @property
    def experiment(self) -> str:
        """Ray Tune's experiment directory; everything of this study lies below it."""
        return self._join()

    @property
    def spec(self) -> str:
        return self._join(SPEC_FILE)

    @property
    def results(self) -> str:
        return self._join(RESULTS_DIR)

    @property
    def metrics(self) -> str:
        return self._join(RESULTS_DIR, "metrics")

    @property
    def trials(self) -> str:
        return self._join(RESULTS_DIR, "trials.parquet")

    @property
    def phases(self) -> str:
        return self._join(RESULTS_DIR, "phases")

    def display(self, path: str) -> str:
        """A path as the user should type it: with the URI scheme and the storage URI's query
        options when not local (an S3 endpoint's `endpoint_override`, `scheme`: without them
        the location is another store)."""
        if self.storage.is_local:
            return path
        parts = urlsplit(self.storage.uri)
        return f"{parts.scheme}://{path}" + (f"?{parts.query}" if parts.query else "")

    def exists(self) -> bool:
        return _exists(self.storage.fs, self.experiment)


def _exists(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def experiment_dir(storage_root: str, name: str) -> str:
    """`<storage>/<name>` as a path on the storage filesystem."""
    return str(PurePosixPath(storage_root, name))


def results_dir(experiment_fs_path: str) -> str:
    """`<experiment>/results`: where the Parquet files go."""
    return str(PurePosixPath(experiment_fs_path, RESULTS_DIR))


# ---------------------------------------------------------------- atomic writes


def write_bytes_atomic(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the new one, never half.

    Local: a dotfile `*.tmp` beside it, then a rename. Object stores: one PUT is atomic.
    """
    parent = str(PurePosixPath(path).parent)
    tmp = str(PurePosixPath(parent, f".{PurePosixPath(path).name}.{uuid.uuid4().hex[:8]}.tmp"))
    try:
        fs.create_dir(parent, recursive=True)
        if fs.type_name != "local":
            with fs.open_output_stream(path) as out:
                out.write(data)
            return
        try:
            with open(tmp, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(OSError):  # the write's own error is the one to raise
                os.unlink(tmp)
    except OSError as exc:
        raise _naming(exc, path, tmp) from exc


def _naming(exc: OSError, path: str, tmp: str) -> OSError:
    """`exc` naming the file the caller wrote: a failed flush or close names no file, and
    the temporary file's name means nothing to a user (the one line of a storage fault)."""
    if exc.errno is None or exc.filename not in (None, tmp):
        return exc
    return OSError(exc.errno, exc.strerror or os.strerror(exc.errno), path)


def write_parquet_atomic(fs: pafs.FileSystem, path: str, table: pa.Table) -> None:
    """Write a Parquet file atomically (see `write_bytes_atomic`)."""
    buffer = pa.BufferOutputStream()  # Arrow-owned memory: see read_parquet
    pq.write_table(table, buffer)
    write_bytes_atomic(fs, path, buffer.getvalue())


def read_parquet(fs: pafs.FileSystem, path: str, columns: Sequence[str] | None = None) -> pa.Table:
    """The Parquet file at `path` (only `columns`, when given), read whole into Arrow-owned
    memory. Raises OSError or pa.ArrowException when it is missing or damaged.

    Never hand Arrow a Python object (`io.BytesIO`, `bytes`): its reader decodes on its own
    thread pool, and a worker that drops the last reference to a Python-owned buffer must take
    the GIL to free it. If that happens while the interpreter is finalising, the worker is
    ended inside a C++ destructor and the process aborts ("terminate called without an active
    exception", SIGABRT) after its work is done. Arrow's own buffers are freed without the GIL.
    """
    with fs.open_input_file(path) as f:
        data = f.read_buffer()
    # One file: ParquetFile skips the dataset that pq.read_table builds around it on every
    # call. It returns no column for a name the file lacks, where read_table raised: so do we.
    parquet = pq.ParquetFile(pa.BufferReader(data))
    if columns is None:
        return parquet.read()
    missing = [c for c in columns if c not in parquet.schema_arrow.names]
    if missing:
        raise pa.ArrowInvalid(f"{path}: no column {missing[0]!r}")
    return parquet.read(columns=list(columns))


def write_json_atomic(fs: pafs.FileSystem, path: str, payload: dict[str, Any]) -> None:
    write_bytes_atomic(fs, path, (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode())


def read_json(fs: pafs.FileSystem, path: str) -> dict[str, Any]:
    with fs.open_input_stream(path) as f:
        return json.loads(f.readall().decode())


def remove_stale_tmp(fs: pafs.FileSystem, directory: str) -> int:
    """Delete leftover `.*.tmp` files of interrupted writes; call only when no writer runs."""
    if fs.type_name != "local" or not os.path.isdir(directory):
        return 0
    stale = [n for n in os.listdir(directory) if n.startswith(".") and n.endswith(".tmp")]
    for name in stale:
        os.unlink(os.path.join(directory, name))
    return len(stale)


# ---------------------------------------------------------------- listing


def experiment_files(paths: StudyPaths) -> list[str]:
    """The names of the files directly in the study's folder, sorted."""
    infos = paths.storage.fs.get_file_info(pafs.FileSelector(paths.experiment))
    return sorted(PurePosixPath(i.path).name for i in infos)
