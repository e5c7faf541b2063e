"""A driver callback that ends the study at the first storage fault, as one error.

A trial whose own write fails (disk full, read-only, denied) would otherwise be retried up to
`--max-failures` times against the same broken storage, each failure logged by Tune with its
traceback, and end as ERROR. A study folder removed while the study runs is recreated piece by
piece by the next writes. The guard raises the fault in the driver instead: Tune's loop ends
(its trials stop, its last snapshot stays what it was), and the service turns the fault into
the CLI's one line (`study.store.faults`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from typing import Any

import pyarrow.fs as pafs
from ray.tune import Callback

from study.ray_internals import trial_storage
from study.store.faults import storage_fault
from study.store.lock import lock_path


class StorageGuard(Callback):
    """Re-raises a trial's storage fault in the driver; checks that the study's lock (and so
    its folder) is still there every `interval_s`."""

    def __init__(self, interval_s: float = 2.0) -> None:
        self.interval_s = interval_s
        self._checked = 0.0

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._raise_fault(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._raise_fault(trial)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if not trials or time.monotonic() - self._checked < self.interval_s:
            return
        self._checked = time.monotonic()
        storage = trial_storage(trials[0])
        lock = lock_path(storage.experiment)
        try:
            gone = storage.fs.get_file_info(lock).type == pafs.FileType.NotFound
        except OSError:  # an unreachable store is left to the next write to report
            return
        if gone:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), lock)

    def _raise_fault(self, trial: Any) -> None:
        error = None
        with contextlib.suppress(Exception):  # its error file may be unreadable: no fault seen
            error = trial.get_pickled_error()
        fault = storage_fault(error)
        if fault is not None:
            raise fault
