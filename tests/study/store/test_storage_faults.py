"""Issue 23 §4: a storage fault is found behind Ray's and Tune's wrappers and named in one line
(the path, the cause); §5: SIGTERM takes the Ctrl+C path. No Ray, no subprocess."""

from __future__ import annotations

import errno
import os
import signal
import threading
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import pytest

from study.errors import StudyStorageError
from study.execute import sigterm
from study.store import fs as study_fs
from study.store.faults import fault_message, storage_fault, vanished_message
from study.store.fs import StudyPaths, resolve_storage, write_bytes_atomic
from study.store.lock import lock_path

FAULTS = {errno.ENOSPC: "disk is full", errno.EROFS: "read-only", errno.EACCES: "permission denied"}


@pytest.mark.parametrize("code", sorted(FAULTS))
def test_a_failed_flush_names_the_file_written_not_its_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    """A full disk fails at the flush or close, which name no file; the temporary file's name
    means nothing to a user. Before, the error named no file at all."""

    def failing_fsync(fd: int) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(study_fs.os, "fsync", failing_fsync)
    target = tmp_path / "results" / "trials.parquet"
    with pytest.raises(OSError) as caught:
        write_bytes_atomic(pafs.LocalFileSystem(), str(target), b"rows")
    assert caught.value.errno == code and caught.value.filename == str(target)
    assert os.listdir(target.parent) == []  # no temporary file left, no half file


def test_an_open_that_fails_names_the_file_written(tmp_path: Path) -> None:
    """A read-only folder fails at the open of the temporary file: the target is named."""
    target = tmp_path / "ro" / "study.json"
    target.parent.mkdir()
    real_open = open

    def read_only_open(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if "w" in mode and str(path).startswith(str(target.parent)):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, mode, *args, **kwargs)

    import builtins

    builtins.open, saved = read_only_open, builtins.open
    try:
        with pytest.raises(OSError) as caught:
            write_bytes_atomic(pafs.LocalFileSystem(), str(target), b"{}")
    finally:
        builtins.open = saved
    assert caught.value.errno == errno.EROFS and caught.value.filename == str(target)


class _TaskError(Exception):
    """Like Ray's RayTaskError: the trial's own error in `.cause`, not in the chain."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__("ray::ImplicitFunc.train() failed")
        self.cause = cause


def test_the_fault_is_found_behind_ray_and_tune_wrappers() -> None:
    disk_full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/s/x/results/m.parquet")
    wrapped = RuntimeError("Tune failed")
    wrapped.__cause__ = _TaskError(disk_full)
    assert storage_fault(wrapped) is disk_full
    assert storage_fault(ValueError("not storage")) is None
    missing = FileNotFoundError(errno.ENOENT, "No such file or directory", "/s/x/a")
    assert storage_fault(missing) is None  # a missing file alone is no storage fault
    assert storage_fault(missing, missing=True) is missing  # the study folder is gone


@pytest.mark.parametrize("code", sorted(FAULTS))
def test_the_message_is_one_line_with_the_path_the_cause_and_the_resume(code: int) -> None:
    fault = OSError(code, os.strerror(code), "/s/x/results/trials.parquet")
    line = fault_message(fault, "/s/x", "python -m study.run --resume --name x --storage /s")
    assert "\n" not in line
    assert line.startswith("cannot write /s/x/results/trials.parquet: " + os.strerror(code))
    assert FAULTS[code] in line and line.endswith("--resume --name x --storage /s")
    unnamed = fault_message(OSError(code, os.strerror(code)), "/s/x", "resume")
    assert unnamed.startswith("cannot write /s/x: ")
    gone = vanished_message("/s/x", "/s/x/study.lock")
    assert "\n" not in gone and "/s/x/study.lock" in gone and "vanished" in gone


def _paths(tmp_path: Path) -> StudyPaths:
    paths = StudyPaths(resolve_storage(str(tmp_path / "studies")), "x")
    os.makedirs(paths.experiment)
    return paths


def test_the_service_names_a_fault_and_a_vanished_folder(tmp_path: Path) -> None:
    from study.service import _storage_error

    paths = _paths(tmp_path)
    Path(lock_path(paths.experiment)).write_text("{}")
    fault = OSError(errno.EROFS, os.strerror(errno.EROFS), paths.trials)
    assert _storage_error(RuntimeError("not storage"), paths) is None
    wrapped = RuntimeError("Tune failed")
    wrapped.__context__ = fault
    error = _storage_error(wrapped, paths)
    assert isinstance(error, StudyStorageError)
    assert str(error).startswith(f"cannot write {paths.trials}: Read-only file system")
    assert "--resume --name x" in str(error)

    Path(lock_path(paths.experiment)).unlink()  # the folder (and its lock) went away
    missing = FileNotFoundError(errno.ENOENT, "No such file or directory", paths.trials)
    error = _storage_error(missing, paths)
    assert isinstance(error, StudyStorageError) and "vanished" in str(error)
    assert paths.trials in str(error)


@pytest.fixture
def fresh_sigterm(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The SIGTERM handler with no SIGTERM received yet; both handlers restored after."""
    monkeypatch.setattr(sigterm, "_TERMINATED", threading.Event())
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    yield sigterm
    signal.signal(signal.SIGTERM, before[0])
    signal.signal(signal.SIGINT, before[1])


def test_sigterm_outside_tune_unwinds_as_ctrl_c(fresh_sigterm: Any) -> None:
    fresh_sigterm.stop_on_sigterm()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGTERM)
    assert fresh_sigterm.terminated()
    signal.raise_signal(signal.SIGTERM)  # a second one while stopping is ignored


def test_sigterm_inside_tune_calls_tunes_graceful_sigint_handler(fresh_sigterm: Any) -> None:
    """Tune's handler sets a flag; its loop then saves the experiment and returns."""
    calls: list[int] = []
    fresh_sigterm.stop_on_sigterm()
    signal.signal(signal.SIGINT, lambda signum, frame: calls.append(signum))
    signal.raise_signal(signal.SIGTERM)
    signal.raise_signal(signal.SIGTERM)
    assert calls == [signal.SIGINT] and fresh_sigterm.terminated()
    assert fresh_sigterm.EXIT_TERMINATED == 143


def test_tunes_failed_storage_check_is_the_vanished_folder_only_when_its_marker_is_gone(
    tmp_path,
) -> None:
    """Tune checks its marker in the experiment folder at every trial checkpoint and raises a
    bare RuntimeError; a removed study folder (which the driver's writes may create again) was
    logged as a 100-line traceback beside the one-line error."""
    from study.store.faults import lost_experiment_folder
    from study.store.tune_files import STORAGE_MARKER

    (tmp_path / "smoke").mkdir()
    text = (
        "Unable to set up cluster storage with the following settings:\nStorageContext<\n"
        f"  storage_filesystem='local',\n  storage_fs_path='{tmp_path}',\n"
        "  experiment_dir_name='smoke',\n>\nCheck that all nodes in the cluster have access"
    )
    wrapped = RuntimeError("trial failed")
    wrapped.__cause__ = RuntimeError(text)
    assert lost_experiment_folder(wrapped)  # the folder is back, its marker is not
    (tmp_path / "smoke" / STORAGE_MARKER).touch()
    assert not lost_experiment_folder(wrapped)  # an unshared node: a real error, shown
    assert not lost_experiment_folder(RuntimeError("something else"))
