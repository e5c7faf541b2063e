"""Storage faults: which errors mean that the study's storage failed, and the one line that
says so (the path, the cause and what to do), for the CLI's `error: ...` line.

A fault can surface in the driver (the trials writer, Tune's snapshots) or in a trial's
process, where Ray and Tune wrap it (`RayTaskError.cause`, `TuneError`, `__cause__`); the
chain is searched for the first OSError whose errno is a storage fault.
"""

from __future__ import annotations

import errno
import os
import re

from study.store.tune_files import STORAGE_MARKER

# errno → (the cause in words, what to do before resuming)
_FAULTS = {
    errno.ENOSPC: ("the disk is full", "free space"),
    errno.EDQUOT: ("the disk quota is exceeded", "free space or raise the quota"),
    errno.EROFS: ("the filesystem is read-only", "make it writable"),
    errno.EACCES: ("permission denied", "give this user write access"),
    errno.EPERM: ("operation not permitted", "give this user write access"),
    errno.EIO: ("an I/O error", "check the disk"),
}
# A missing file is a fault only when the study's folder itself is gone (see `vanished`):
# otherwise it is an ordinary error of the code that looked for the file.
_VANISHED = ("the study folder vanished", "put the folder back")


def storage_fault(exc: BaseException | None, missing: bool = False) -> OSError | None:
    """The OSError behind `exc` that is a storage fault, or None. With `missing` (the study's
    folder is gone), ENOENT counts too."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and (
            exc.errno in _FAULTS or (missing and exc.errno == errno.ENOENT)
        ):
            return exc
        cause = getattr(exc, "cause", None)  # RayTaskError keeps the trial's error here
        if not isinstance(cause, BaseException) or id(cause) in seen:
            cause = exc.__cause__ or exc.__context__
        exc = cause
    return None


def fault_message(fault: OSError, fallback_path: str, resume: str) -> str:
    """One line: the path, the cause, and the command that continues the study."""
    cause, remedy = _FAULTS.get(fault.errno or 0, _VANISHED)
    path = fault.filename or fallback_path
    reason = fault.strerror or type(fault).__name__
    return f"cannot write {path}: {reason} ({cause}); {remedy}, then resume with: {resume}"


def vanished_message(folder: str, missing: str) -> str:
    """One line for a study folder (or its lock) removed while the study ran."""
    cause, remedy = _VANISHED
    return (
        f"{missing}: No such file or directory ({cause} while the study ran: {folder}); "
        f"{remedy}, then resume it"
    )


# Tune's own check, at each checkpoint, that a trial still sees the experiment folder (its
# validation marker). It raises a RuntimeError with no OSError behind it, so `storage_fault`
# cannot see it. When the marker is gone from the folder it names, the folder was removed
# (later writes of the driver may have created it again, empty of the marker); when it is
# there, the trial's node does not share the storage, and the error is shown.
_TUNE_STORAGE_CHECK = "Unable to set up cluster storage"
_TUNE_FOLDER = re.compile(r"storage_fs_path='([^']*)'.*?experiment_dir_name='([^']*)'", re.S)


def lost_experiment_folder(exc: BaseException | None) -> bool:
    """`exc` is Tune's failed storage check for a local experiment folder that lost Tune's
    marker (a study folder removed while the study ran)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        text = str(exc)
        if _TUNE_STORAGE_CHECK in text:
            found = _TUNE_FOLDER.search(text)
            return bool(found) and not os.path.exists(os.path.join(*found.groups(), STORAGE_MARKER))
        cause = getattr(exc, "cause", None)
        if not isinstance(cause, BaseException) or id(cause) in seen:
            cause = exc.__cause__ or exc.__context__
        exc = cause
    return False
