"""MLflow at the optimiser step (a module of its own: importing it imports mlflow)."""

from __future__ import annotations

import os
from typing import Any

from ray.air.integrations.mlflow import MLflowLoggerCallback

from study.execute.tracker_steps import OncePerStep, mlflow_run_and_last_step


class StepMLflow(OncePerStep, MLflowLoggerCallback):
    """Tune's MLflow callback logging each record once, at its `step`; a resumed trial
    continues the run it logged to before (found by its `trial_name` tag) instead of a new one."""

    def setup(self, *args: Any, **kwargs: Any) -> None:
        if self.tracking_uri and self.tracking_uri.startswith("file:"):
            # MLflow 3 keeps a file store only on request; a resumed driver gets this callback
            # from tuner.pkl, without the environment the first driver set up
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        super().setup(*args, **kwargs)

    def log_trial_start(self, trial: Any) -> None:
        if trial not in self._trial_runs:
            run_id, last = self._find_run(trial)
            if run_id is not None:
                self._trial_runs[trial] = run_id
                self.__dict__.setdefault("_logged", {})[trial.trial_id] = last
        super().log_trial_start(trial)

    def _find_run(self, trial: Any) -> tuple[str | None, int]:
        return mlflow_run_and_last_step(
            self.tracking_uri, self.mlflow_util.experiment_id, str(trial)
        )

    def _read_back(self, trial: Any) -> int:
        return self._find_run(trial)[1]

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        step = self._new_step(trial, result)
        if step is not None:
            self.mlflow_util.log_metrics(
                run_id=self._trial_runs[trial], metrics_to_log=result, step=step
            )
