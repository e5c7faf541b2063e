"""ilstudy's study service. The public Python API (README, "Python API"):

- `run_study(space, storage=..., **options)`, `resume_study(name, storage=..., **options)`
  and `load_study(path_or_uri)` return a `StudyResult` (`.trials`, `.metrics` as DataFrames);
- `StudyError` and its kinds `StudyInputError`, `StudyStorageError`, `StudyLockError`.

Names are imported on first use, so `import study` imports neither Ray nor torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from study.api import StudyResult, load_study, resume_study, run_study
    from study.errors import StudyError, StudyInputError, StudyLockError, StudyStorageError

__all__ = [
    "StudyError",
    "StudyInputError",
    "StudyLockError",
    "StudyResult",
    "StudyStorageError",
    "load_study",
    "resume_study",
    "run_study",
]

_HOME = {
    "StudyResult": "study.api",
    "load_study": "study.api",
    "resume_study": "study.api",
    "run_study": "study.api",
    "StudyError": "study.errors",
    "StudyInputError": "study.errors",
    "StudyLockError": "study.errors",
    "StudyStorageError": "study.errors",
}


def __getattr__(name: str) -> Any:
    """The API's names, imported when first asked for (PEP 562)."""
    if name not in _HOME:
        raise AttributeError(f"module 'study' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_HOME[name]), name)
    globals()[name] = value
    return value
