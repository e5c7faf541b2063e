"""Experiment trackers as views: MLflow, Weights & Biases and TensorBoard, as Tune logger
callbacks that log each record once, at its optimiser step (`study.execute.tracker_callbacks`).
The Parquet files stay the record of truth; a tracker only shows the runs.

Each tracker's package is an optional extra (`pip install 'ilstudy[mlflow]'`); asking for one
that is not installed is refused before anything is written. None of them may bring torch
into the driver, which needs no torch (tests check it).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

from study.errors import StudyError

# tracker → (module it needs, the extra that installs it)
TRACKERS = {
    "mlflow": ("mlflow", "mlflow"),
    "wandb": ("wandb", "wandb"),
    "tensorboard": ("tensorboardX", "tensorboard"),
}


def check_trackers(names: Sequence[str]) -> None:
    """StudyError naming the extra for a tracker that is unknown or not installed."""
    for name in names:
        if name not in TRACKERS:
            raise StudyError(f"--tracker {name}: must be one of {', '.join(TRACKERS)}")
        module, extra = TRACKERS[name]
        if importlib.util.find_spec(module) is None:
            raise StudyError(
                f"--tracker {name} needs the {module} package: pip install 'ilstudy[{extra}]'"
            )


def check_tracker_storage(names: Sequence[str], storage_is_local: bool, environ: dict) -> None:
    """StudyError for a tracker that cannot keep its runs where the study is stored: MLflow's
    default file store lies in the study folder, which a remote storage does not give it."""
    if "mlflow" in names and not storage_is_local and not environ.get("MLFLOW_TRACKING_URI"):
        raise StudyError(MLFLOW_REMOTE)


MLFLOW_REMOTE = "--tracker mlflow on remote storage needs MLFLOW_TRACKING_URI"
