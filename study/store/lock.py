"""The study lock: one driver per study, claimed atomically before anything else is written.

The lock is the file `<storage>/<study>/study.store.lock`, created with O_CREAT|O_EXCL and holding
JSON `{"host", "pid", "created_at" (ISO-8601 UTC), "command"}`. Other tools (the status view)
read it with `read_holder` and `is_live`.

Stale locks. A lock whose holder ran on this host and whose process is gone (or whose pid now
belongs to a process started after the lock was written) is stale: `acquire` takes it over. A
lock held from another host cannot be checked from here, so `acquire` refuses it, naming the
holder, unless `break_lock=True` (the CLI's `--break-lock`), which the user passes once they
know that driver is gone.

Guarantees. On a local or shared POSIX filesystem O_EXCL makes the claim atomic: of two drivers
exactly one gets the lock (NFS honours O_EXCL since NFSv3). Object stores (s3://, gs://, ...)
have no exclusive create through pyarrow.fs: there the lock is written, then read back, which
catches most races but not all: best-effort only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import socket
import sys
import uuid
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import pyarrow.fs as pafs

from study.errors import StudyError, StudyLockError

LOCK_FILE = "study.lock"  # the name the README documents; operators look for it by name


class LockHeld(StudyLockError):
    """The study is locked by another driver (or by a holder this host cannot check)."""


@dataclass(frozen=True)
class Lock:
    """A lock this process holds; `release` removes it only while it is still ours."""

    fs: pafs.FileSystem
    path: str
    holder: dict[str, Any]
    created_dir: str | None = None  # the study folder `acquire` created, if it did

    @property
    def is_local(self) -> bool:
        return self.fs.type_name == "local"

    def _replace_dir(self, created_dir: str) -> Lock:
        return dataclasses.replace(self, created_dir=created_dir)


def lock_path(experiment: str) -> str:
    return str(PurePosixPath(experiment, LOCK_FILE))


def this_holder(command: str | None = None) -> dict[str, Any]:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "created_at": dt.datetime.now(tz=dt.UTC).isoformat(timespec="microseconds"),
        "command": command if command is not None else " ".join(sys.argv),
    }


def read_holder(path: str, fs: pafs.FileSystem | None = None) -> dict[str, Any] | None:
    """The lock's holder, or None when there is no lock or it is not (yet) a holder record."""
    fs = fs or pafs.LocalFileSystem()
    try:
        with fs.open_input_stream(path) as f:
            payload = json.loads(f.readall().decode())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get("pid"), int):
        return None
    return payload


def is_live(holder: dict[str, Any]) -> bool:
    """False only when the holder provably no longer runs: same host, process gone or reused.

    A holder on another host cannot be checked from here and counts as live.
    """
    if holder.get("host") != socket.gethostname():
        return True
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    started = _process_start(pid)
    created = _parse_time(holder.get("created_at"))
    # A pid reused by a process that started after the lock was written is not the holder.
    return not (started is not None and created is not None and started > created + 1.0)


def describe(holder: dict[str, Any] | None) -> str:
    if holder is None:
        return "an unknown holder (the lock file is empty or unreadable)"
    return (
        f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('created_at')} "
        f"({holder.get('command') or 'unknown command'})"
    )


def acquire(
    fs: pafs.FileSystem,
    experiment: str,
    *,
    create_dir: bool = False,
    break_lock: bool = False,
    command: str | None = None,
    display: str | None = None,
) -> Lock:
    """Claim the study at `experiment` (a path on `fs`); LockHeld naming the holder if taken.

    `create_dir=True` (a new study) creates the study folder itself, atomically: if it exists
    already the study is not new and StudyError says so. OSError (read-only, missing
    permissions) propagates for the caller to name.
    """
    path = lock_path(experiment)
    shown = display or path
    created_dir = None
    if create_dir:
        parent = str(PurePosixPath(experiment).parent)
        fs.create_dir(parent, recursive=True)
        if fs.type_name == "local":
            try:
                os.mkdir(experiment)
            except FileExistsError:
                holder = read_holder(path, fs)
                if only_a_stale_lock(fs, experiment):
                    # A new study killed while Ray started left only its lock: start again.
                    return acquire(
                        fs, experiment, break_lock=break_lock, command=command, display=display
                    )._replace_dir(experiment)
                also = f" (being created by {describe(holder)})" if holder else ""
                raise StudyError(
                    f"study {PurePosixPath(experiment).name!r} already exists at "
                    f"{display.rsplit('/', 1)[0] if display else experiment}{also}; "
                    "pass --resume to continue it, or choose another --name"
                ) from None
        else:
            fs.create_dir(experiment, recursive=True)
        created_dir = experiment
    holder = this_holder(command)
    try:
        _create_exclusive(fs, path, holder, shown, break_lock)
    except BaseException:
        if created_dir is not None:
            _remove_empty_dir(fs, created_dir)
        raise
    return Lock(fs=fs, path=path, holder=holder, created_dir=created_dir)


def release(lock: Lock | None, remove_created_dir: bool = False) -> None:
    """Remove the lock if it is still ours; never raises. With `remove_created_dir`, also the
    study folder `acquire` created, when nothing else was written into it (a refused start)."""
    if lock is None:
        return
    with contextlib.suppress(Exception):
        current = read_holder(lock.path, lock.fs)
        if current is not None and _same(current, lock.holder):
            lock.fs.delete_file(lock.path)
    if remove_created_dir and lock.created_dir is not None:
        _remove_empty_dir(lock.fs, lock.created_dir)


# ---------------------------------------------------------------- internals


def _create_exclusive(
    fs: pafs.FileSystem, path: str, holder: dict[str, Any], shown: str, break_lock: bool
) -> None:
    data = json.dumps(holder, sort_keys=True).encode()
    if fs.type_name != "local":
        _create_best_effort(fs, path, holder, data, shown, break_lock)
        return
    for _ in range(3):  # a stale lock taken over, then claimed again
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            current = read_holder(path, fs)
            if current is not None and _same(current, holder):
                return
            _refuse_or_take_over(fs, path, current, shown, break_lock)
            continue
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        return
    raise LockHeld(f"study lock {shown} keeps being taken by another driver; retry")


def _refuse_or_take_over(
    fs: pafs.FileSystem, path: str, current: dict[str, Any] | None, shown: str, break_lock: bool
) -> None:
    """Return after moving a stale (or explicitly broken) lock aside; LockHeld otherwise."""
    same_host = current is not None and current.get("host") == socket.gethostname()
    if current is not None and is_live(current) and (same_host or not break_lock):
        hint = (
            "wait for it to end or stop it"
            if same_host
            else "if that driver is gone, pass --break-lock"
        )
        raise LockHeld(f"study is locked by {describe(current)} ({shown}); {hint}")
    if current is None and not break_lock:
        raise LockHeld(
            f"study lock {shown} is empty or unreadable (a driver may be starting, or one "
            "died while writing it); if no driver runs this study, pass --break-lock"
        )
    # Move the stale lock aside under a unique name (atomic): of two drivers taking over the
    # same stale lock, one rename wins; the other's fails and it retries the O_EXCL create.
    aside = f"{path}.stale-{uuid.uuid4().hex[:8]}"
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    moved = read_holder(aside, fs)
    if current is not None and (moved is None or not _same(moved, current)):
        # Lost a race: what was moved is another driver's fresh lock. Put it back.
        with contextlib.suppress(OSError):
            os.link(aside, path)
    with contextlib.suppress(OSError):
        os.unlink(aside)


def _create_best_effort(
    fs: pafs.FileSystem,
    path: str,
    holder: dict[str, Any],
    data: bytes,
    shown: str,
    break_lock: bool,
) -> None:
    current = read_holder(path, fs)
    if current is not None and is_live(current) and not break_lock:
        raise LockHeld(
            f"study is locked by {describe(current)} ({shown}); if that driver is gone, "
            "pass --break-lock"
        )
    with fs.open_output_stream(path) as out:
        out.write(data)
    back = read_holder(path, fs)
    if back is None or not _same(back, holder):
        raise LockHeld(f"study is locked by {describe(back)} ({shown}); it claimed it meanwhile")


def only_a_stale_lock(fs: pafs.FileSystem, experiment: str) -> bool:
    """The study folder holds nothing but a dead driver's lock: a new study killed while Ray
    started, before it wrote anything else. Such a name may be started again."""
    try:
        infos = fs.get_file_info(pafs.FileSelector(experiment))
    except (OSError, ValueError):
        return False
    if [PurePosixPath(i.path).name for i in infos] != [LOCK_FILE]:
        return False
    holder = read_holder(lock_path(experiment), fs)
    return holder is not None and not is_live(holder)


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return all(a.get(k) == b.get(k) for k in ("host", "pid", "created_at"))


def _remove_empty_dir(fs: pafs.FileSystem, directory: str) -> None:
    with contextlib.suppress(Exception):
        if fs.type_name == "local":
            os.rmdir(directory)  # only if empty
        elif not fs.get_file_info(pafs.FileSelector(directory)):
            fs.delete_dir(directory)


def _process_start(pid: int) -> float | None:
    """The process's start as Unix seconds (Linux /proc), or None when unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # starttime, field 22 of proc(5)
        with open("/proc/stat") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith("btime"))
        return btime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _parse_time(text: Any) -> float | None:
    try:
        return dt.datetime.fromisoformat(str(text)).timestamp()
    except (TypeError, ValueError):
        return None
