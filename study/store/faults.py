"""Storage faults: which errors mean that the study's storage failed, and the one line that
says so (the path, the cause and what to do), for the CLI's `error: ...` line.

A fault can surface in the driver (the trials writer, Tune's snapshots) or in a trial's
process, where Ray and Tune wrap it (`RayTaskError.cause`, `TuneError`, `__cause__`); the
chain is searched for the first OSError whose errno is a storage fault.
"""

from __future__ import annotations

import errno

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
