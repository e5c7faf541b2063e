"""TensorBoard at the optimiser step (a module of its own: importing it imports tensorboardX,
which the caller does without torch)."""

from __future__ import annotations

import math
from typing import Any

from ray.tune.logger import LoggerCallback

from study.execute.tracker_steps import OncePerStep, tensorboard_last_step, without_torch

# Tune's bookkeeping keys, which its own TBXLoggerCallback leaves out too
_NOT_METRICS = frozenset({"config", "pid", "timestamp", "time_total_s", "training_iteration"})


class StepTensorBoard(OncePerStep, LoggerCallback):
    """Scalars `ray/tune/<key>` (the tags of Tune's TBXLoggerCallback) at each record's `step`,
    once, in event files in the trial's folder; non-numeric and non-finite values are left out."""

    def __init__(self) -> None:
        self._writers: dict[Any, Any] = {}

    def _read_back(self, trial: Any) -> int:
        return tensorboard_last_step(trial.local_path)

    def log_trial_start(self, trial: Any) -> None:
        with without_torch():  # a resumed driver imports it here first
            from tensorboardX import SummaryWriter

        if trial in self._writers:
            self._writers[trial].close()
        trial.init_local_path()
        self._writers[trial] = SummaryWriter(trial.local_path, flush_secs=30)

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        step = self._new_step(trial, result)
        if step is None:
            return
        if trial not in self._writers:
            self.log_trial_start(trial)
        writer = self._writers[trial]
        for key, value in result.items():
            if key in _NOT_METRICS or isinstance(value, bool):
                continue
            if isinstance(value, int | float) and math.isfinite(value):
                writer.add_scalar(f"ray/tune/{key}", value, global_step=step)
        writer.flush()

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        writer = self._writers.pop(trial, None)
        if writer is not None:
            writer.close()
