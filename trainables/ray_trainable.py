"""The Ray Tune function trainable: a thin adapter around `trainables.Trial`.

It restores from `tune.get_checkpoint()`, reports every record with `tune.report`, and
checkpoints every `checkpoint_every` records (or `checkpoint_every_s` seconds) and always at
the end. A checkpoint holds the trial state *and the trial's rows so far*; at each checkpoint
the trial rewrites `results/metrics/<trial_id>.parquet` from exactly those rows, so what is
stored always matches a state the trial can continue from, and a redone report after a
restore (RAY_NOTES trap 2) rewrites the same (trial, step) rows instead of adding new ones.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow.parquet as pq

TRAINABLE_NAME = "ilstudy_trial"  # stable: Tuner.restore finds the trainable by this name
_STATE_FILE = "state.pt"  # torch.save of {"trial": Trial.state_dict(), "adapter": {...}}
_ROWS_FILE = "rows.parquet"  # the trial's metrics rows up to this checkpoint


@dataclass(frozen=True)
class AdapterSettings:
    """Study-level settings the trainable needs; not part of any trial's config."""

    study: str
    checkpoint_every: int = 10  # records between checkpoints; 0 = only at the end
    checkpoint_every_s: float = 300.0  # also checkpoint once this many seconds have passed
    code_version: str = "unknown"  # ilstudy version (+ git commit), stored with every row


def make_trainable(settings: AdapterSettings) -> Callable[[dict[str, Any]], None]:
    """A function trainable named `TRAINABLE_NAME`, bound to the study's settings."""

    def ilstudy_trial(config: dict[str, Any]) -> None:
        _run_trial(config, settings)

    ilstudy_trial.__name__ = ilstudy_trial.__qualname__ = TRAINABLE_NAME
    return ilstudy_trial


def trial_device() -> str:
    """CUDA when Ray assigned this trial a GPU and CUDA exists; the CPU otherwise."""
    import ray
    import torch

    return "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"


def _trial_cpus() -> float:
    from ray import tune

    resources = tune.get_context().get_trial_resources().required_resources
    return float(resources.get("CPU", 1.0))


def _results_location() -> tuple[Any, str]:
    """(filesystem, `<storage>/<study>/results`) as seen from this trial's process."""
    from ray.train._internal.session import get_storage

    from study.storage import results_dir

    storage = get_storage()
    return storage.storage_filesystem, results_dir(storage.experiment_fs_path)


def _node() -> str:
    import ray

    return f"{socket.gethostname()}/{ray.get_runtime_context().get_node_id()[:8]}"


def _run_trial(config: Mapping[str, Any], settings: AdapterSettings) -> None:
    entered_at = time.time()  # the trial's start, before imports and data loading
    import torch
    from ray import tune

    from study.results import METRICS_SCHEMA, config_columns, metric_columns, table, utc
    from study.results import write_trial_metrics as write_metrics
    from trainables import Trial

    torch.set_num_threads(max(1, int(_trial_cpus())))  # threads follow the trial's CPU share
    device = trial_device()
    trial_id = tune.get_context().get_trial_id()
    fs, results = _results_location()
    trial = Trial(config, device=device)
    rows: list[dict[str, Any]] = []
    meta = {"attempt": 0, "started_at": entered_at, "wall_s": 0.0}
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            saved = torch.load(
                os.path.join(directory, _STATE_FILE), map_location=device, weights_only=False
            )
            rows = pq.read_table(os.path.join(directory, _ROWS_FILE)).to_pylist()
        trial.load_state_dict(saved["trial"])
        meta = dict(saved["adapter"], attempt=saved["adapter"]["attempt"] + 1)
    attempt_t0 = entered_at
    fixed = {
        "study": settings.study,
        "trial_id": trial_id,
        **config_columns(trial.cfg),
        "attempt": meta["attempt"],
        "device": device,
        "node": _node(),
        "ilstudy_version": settings.code_version,
        "torch_version": str(torch.__version__),
    }

    def tune_metrics(row: Mapping[str, Any]) -> dict[str, Any]:
        metrics = {key: row[key] for key in metric_columns(row)}
        wall_s = meta["wall_s"] + time.time() - attempt_t0
        return dict(
            metrics,
            attempt=meta["attempt"],
            device=device,
            node=fixed["node"],
            trial_started_at=meta["started_at"],
            trial_wall_s=wall_s,
            reported_at=time.time(),
            ilstudy_version=settings.code_version,
            torch_version=str(torch.__version__),
        )

    def report_with_checkpoint() -> None:
        with tempfile.TemporaryDirectory(prefix="ilstudy-ckpt-") as directory:
            torch.save(
                {"trial": trial.state_dict(), "adapter": dict(meta)},
                os.path.join(directory, _STATE_FILE),
            )
            pq.write_table(table(rows, METRICS_SCHEMA), os.path.join(directory, _ROWS_FILE))
            # The file first, then the checkpoint: once Tune sees a trial finish, its file
            # is complete; a crash in between leaves rows a restored trial will rewrite.
            write_metrics(fs, results, trial_id, rows)
            tune.report(
                tune_metrics(rows[-1]), checkpoint=tune.Checkpoint.from_directory(directory)
            )

    last_checkpoint_t, checkpointed, yielded = time.time(), len(rows), False
    for record in trial.records():
        now, yielded = time.time(), True
        rows.append({**fixed, **metric_columns(record), "reported_at": utc(now)})
        final = bool(record["diverged"]) or record["step"] >= trial.cfg.total_steps
        every = settings.checkpoint_every
        due = (every and len(rows) - checkpointed >= every) or (
            now - last_checkpoint_t >= settings.checkpoint_every_s
        )
        if not (final or due):
            tune.report(tune_metrics(rows[-1]))
            continue
        meta["wall_s"] += now - attempt_t0
        attempt_t0 = now
        report_with_checkpoint()
        last_checkpoint_t, checkpointed = time.time(), len(rows)
    if len(rows) > checkpointed:  # the loop ended without its final record: checkpoint anyway
        meta["wall_s"] += time.time() - attempt_t0
        attempt_t0 = time.time()
        report_with_checkpoint()
    elif not yielded and rows:
        # Restored from the final checkpoint (Tune lost the completion): report it again.
        tune.report(tune_metrics(rows[-1]))
