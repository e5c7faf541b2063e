"""Experiment trackers as Tune callbacks: MLflow, Weights & Biases and TensorBoard, through
Tune's own logger callbacks (the checks a study passes first are in `study.plan.trackers`). The Parquet files stay the record of truth; a tracker only shows the runs.

Each tracker's package is an optional extra (`pip install 'ilstudy[mlflow]'`); asking for one
that is not installed is refused before anything is written. None of them may bring torch
into the driver, which needs no torch (tests check it).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from study.errors import StudyError
from study.plan.trackers import MLFLOW_REMOTE, check_trackers


@contextmanager
def _without_torch() -> Iterator[None]:
    """tensorboardX imports torch when it can, only to accept tensors; the driver logs floats,
    so torch is hidden while it is imported (a driver that already has torch keeps it)."""
    if "torch" in sys.modules:
        yield
        return
    sys.modules["torch"] = None  # type: ignore[assignment]  # import torch → ImportError
    try:
        yield
    finally:
        if sys.modules.get("torch") is None:
            del sys.modules["torch"]


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
            from ray.air.integrations.mlflow import MLflowLoggerCallback

            uri = os.environ.get("MLFLOW_TRACKING_URI")
            if not uri:
                if study_dir is None:
                    raise StudyError(MLFLOW_REMOTE)
                uri = "file://" + os.path.join(study_dir, "mlruns")
                # MLflow 3 keeps its file store only on request; it needs no server
                os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            out.append(
                MLflowLoggerCallback(tracking_uri=uri, experiment_name=study, save_artifact=False)
            )
        elif name == "wandb":
            from ray.air.integrations.wandb import WandbLoggerCallback

            mode = os.environ.get("WANDB_MODE") or (
                "online" if os.environ.get("WANDB_API_KEY") else "offline"
            )
            os.environ["WANDB_MODE"] = mode  # Tune's key check reads the environment
            kwargs: dict[str, Any] = {"mode": mode}
            if study_dir is not None:
                kwargs["dir"] = study_dir
            out.append(WandbLoggerCallback(project=study, **kwargs))
        else:
            with _without_torch():
                import tensorboardX  # noqa: F401  # imported here, without torch
                from ray.tune.logger import TBXLoggerCallback

            out.append(TBXLoggerCallback())
    return out
