"""Weights & Biases at the optimiser step (a module of its own: importing it imports wandb)."""

from __future__ import annotations

import os
from typing import Any

from ray.air.integrations.wandb import WandbLoggerCallback

from study.execute.tracker_steps import OncePerStep, wandb_last_step


class StepWandb(OncePerStep, WandbLoggerCallback):
    """Tune's W&B callback logging each record once, at its `step`. Tune's logging actor logs a
    result at its `training_iteration`, so the result it is handed carries the step there:
    W&B's `_step` and `training_iteration` both read the optimiser step (Tune's record count
    is in the Parquet rows). A resumed trial is a new W&B run under the same id."""

    def _read_back(self, trial: Any) -> int:
        where = self.kwargs.get("dir") or os.getcwd()
        return wandb_last_step(os.path.join(where, "wandb"), trial.trial_id)

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        step = self._new_step(trial, result)
        if step is not None:
            super().log_trial_result(iteration, trial, {**result, "training_iteration": step})

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        # An interrupted driver ends its trials without log_trial_end, and Tune's callback
        # then waits its whole upload timeout for logging actors nobody told to finish
        for trial in list(self._trial_logging_actors):
            self.log_trial_end(trial)
        super().on_experiment_end(trials, **info)
