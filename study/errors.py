"""Errors the study service raises; the CLI turns each into one line and exit code 2.

The hierarchy, all importable from `study`:

- `StudyError`: the base; its message is the CLI's one line.
  - `StudyInputError`: an option, a space or a config that cannot be run as given.
  - `StudyStorageError`: the storage cannot be read or written (full, read-only, denied,
    vanished, unreachable) or holds files that are not a study's.
  - `StudyLockError`: another driver holds the study's lock.

`StudyError` stays a `ValueError` so that callers written against the first API keep working.
"""

from __future__ import annotations


class StudyError(ValueError):
    """A study that cannot go on: a message that names the problem and what is allowed."""


class StudyInputError(StudyError):
    """Bad input: an option, a space or a trial config."""


class StudyStorageError(StudyError):
    """The study's storage failed or holds something that is not a study's files."""


class StudyLockError(StudyError):
    """Another driver holds the study's lock."""
