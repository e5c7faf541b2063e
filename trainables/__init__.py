"""The science of ilstudy in pure PyTorch: trial config, data, models, trainers and the loop.

Everything here runs without Ray and knows no service: the Tune adapter is ``study.trainable``.
The config, the record keys and the dataset catalogue import without torch, so a study
driver can validate everything without the numerical stack; the rest loads on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from trainables.catalog import DatasetMissingError
from trainables.config import TrialConfig, parse_override
from trainables.keys import MEASURE_KEYS, PHASE_KEYS, RECORD_KEYS, STABILITY_KEYS

if TYPE_CHECKING:
    from trainables.data import Data, batch_indices, load_data
    from trainables.loop import Trial, run
    from trainables.stability import lin_gap, lr_sharpness, sharpness

_LAZY = {
    "Data": "trainables.data",
    "batch_indices": "trainables.data",
    "load_data": "trainables.data",
    "Trial": "trainables.loop",
    "run": "trainables.loop",
    "sharpness": "trainables.stability",
    "lr_sharpness": "trainables.stability",
    "lin_gap": "trainables.stability",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'trainables' has no attribute {name!r}")


__all__ = [
    "MEASURE_KEYS",
    "PHASE_KEYS",
    "RECORD_KEYS",
    "STABILITY_KEYS",
    "Data",
    "DatasetMissingError",
    "Trial",
    "TrialConfig",
    "batch_indices",
    "lin_gap",
    "load_data",
    "lr_sharpness",
    "parse_override",
    "run",
    "sharpness",
]
