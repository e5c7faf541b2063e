"""The science of ilstudy in pure PyTorch: trial config, data, models, trainers and the loop.

Everything here runs without Ray; ``trainables.ray_trainable`` is the thin Tune adapter.
"""

from __future__ import annotations

from trainables.config import TrialConfig, parse_override
from trainables.data import Data, DatasetMissingError, batch_indices, load_data
from trainables.loop import MEASURE_KEYS, RECORD_KEYS, Trial, run

__all__ = [
    "MEASURE_KEYS",
    "RECORD_KEYS",
    "Data",
    "DatasetMissingError",
    "Trial",
    "TrialConfig",
    "batch_indices",
    "load_data",
    "parse_override",
    "run",
]
