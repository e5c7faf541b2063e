"""Experiment trackers as Tune callbacks: MLflow, Weights & Biases and TensorBoard, through
Tune's own logger callbacks (the checks a study passes first are in `study.plan.trackers`).
The Parquet files stay the record of truth; a tracker only shows the runs.

Every tracker logs a record at its optimiser `step` (the `step` column of the Parquet rows),
not at Tune's record count, so its curves lie over the report's. Each step is logged once
per trial: a resumed trial reports again the records after its checkpoint, and those a
tracker already holds (read back from its own files, `study.execute.tracker_readback`) or
logged earlier in this driver are skipped.

Each tracker's package is an optional extra (`pip install 'ilstudy[mlflow]'`); asking for one
that is not installed is refused before anything is written. None of them may bring torch
into the driver, which needs no torch (tests check it).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from study.errors import StudyError
from study.execute.tracker_steps import without_torch
from study.plan.trackers import MLFLOW_REMOTE, check_trackers


def tracker_callbacks(names: Sequence[str], study: str, study_dir: str | None) -> list[Any]:
    """Tune logger callbacks for the trackers; `study_dir` is the study's folder when local.

    - mlflow: runs under experiment `study`, at $MLFLOW_TRACKING_URI or a file store in
      `<study>/mlruns`.
    - wandb: project `study`, files under `<study>/wandb`; offline unless $WANDB_MODE or an API
      key says otherwise (the study never needs the network).
    - tensorboard: event files in each trial's folder of the study.
    """
    check_trackers(names)
    out: list[Any] = []
    for name in names:
        if name == "mlflow":
            from study.execute.tracker_mlflow import StepMLflow

            uri = os.environ.get("MLFLOW_TRACKING_URI")
            if not uri:
                if study_dir is None:
                    raise StudyError(MLFLOW_REMOTE)
                uri = "file://" + os.path.join(study_dir, "mlruns")
                # MLflow 3 keeps its file store only on request; it needs no server
                os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            out.append(StepMLflow(tracking_uri=uri, experiment_name=study, save_artifact=False))
        elif name == "wandb":
            from study.execute.tracker_wandb import StepWandb

            mode = os.environ.get("WANDB_MODE") or (
                "online" if os.environ.get("WANDB_API_KEY") else "offline"
            )
            os.environ["WANDB_MODE"] = mode  # Tune's key check reads the environment
            kwargs: dict[str, Any] = {"mode": mode}
            if study_dir is not None:
                kwargs["dir"] = study_dir
            out.append(StepWandb(project=study, **kwargs))
        else:
            with without_torch():
                import tensorboardX  # noqa: F401  # imported here, without torch
            from study.execute.tracker_tensorboard import StepTensorBoard

            out.append(StepTensorBoard())
    return out
