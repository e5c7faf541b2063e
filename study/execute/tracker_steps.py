"""Trackers on the optimiser step, each step once: what a tracker already holds, read back from
its own files, and the rule the tracker callbacks (`study.execute.tracker_callbacks`) share.

A resumed trial restarts from the checkpoint in Tune's last experiment snapshot and reports
again every record after it; some of those were logged before the driver stopped. The
callbacks' own state cannot say which (it is saved with that same snapshot, behind the
tracker), so each tracker's store is asked instead. Every reader returns the highest
optimiser step logged, or -1 when the trial logged nothing.
"""

from __future__ import annotations

import glob
import json
import os
import struct
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

NOTHING = -1


class OncePerStep:
    """Which records are new to a tracker: a step above the highest one it logged for the
    trial, in this driver or (read back from its files by `_read_back`) in an earlier one."""

    def _read_back(self, trial: Any) -> int:
        """The highest step the tracker holds for the trial from earlier drivers."""
        raise NotImplementedError

    def _new_step(self, trial: Any, result: dict) -> int | None:
        """The record's step if the tracker has not logged it yet, else None."""
        if "step" not in result:
            return None
        logged = self.__dict__.setdefault("_logged", {})  # trial_id → highest step logged
        step = int(result["step"])
        last = logged.get(trial.trial_id)
        if last is None:
            last = self._read_back(trial)
        logged[trial.trial_id] = max(last, step)
        return step if step > last else None


@contextmanager
def without_torch() -> Iterator[None]:
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


def mlflow_run_and_last_step(
    tracking_uri: str, experiment_id: str, run_name: str
) -> tuple[str | None, int]:
    """The MLflow run a trial logged to before (found by its `trial_name` tag) and the highest
    step of its `step` metric, which every record logs at its own step."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    runs = client.search_runs(
        [experiment_id], filter_string=f"tags.trial_name = '{run_name}'", max_results=1
    )
    if not runs:
        return None, NOTHING
    run_id = runs[0].info.run_id
    steps = [m.step for m in client.get_metric_history(run_id, "step")]
    return run_id, max(steps, default=NOTHING)


def tensorboard_scalars(path: str) -> Iterator[tuple[str, int, float]]:
    """(tag, step, value) of every scalar in one TFRecord event file (length, CRC, event, CRC);
    a record cut short by a killed writer ends the file."""
    from tensorboardX.proto import event_pb2

    data, pos = Path(path).read_bytes(), 0
    while pos + 12 <= len(data):
        (length,) = struct.unpack("<Q", data[pos : pos + 8])
        if pos + 12 + length > len(data):
            return
        event = event_pb2.Event()
        event.ParseFromString(data[pos + 12 : pos + 12 + length])
        pos += 12 + length + 4
        for value in event.summary.value:
            yield value.tag, int(event.step), float(value.simple_value)


def tensorboard_last_step(folder: str) -> int:
    """The highest step of any scalar in the event files of a trial's folder."""
    steps = [
        step
        for path in glob.glob(os.path.join(folder, "events.out.tfevents.*"))
        for _, step, _ in tensorboard_scalars(path)
    ]
    return max(steps, default=NOTHING)


def _wandb_records(path: str) -> Iterator[bytes]:
    """The records of a W&B `.wandb` file: a 7-byte header, then LevelDB-style log blocks of
    32 KiB whose records carry a 7-byte header (CRC, little-endian length, type)."""
    data = Path(path).read_bytes()
    pos, block, buf = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # the block's tail is padding
            pos += left
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 1:  # a whole record
            yield chunk
        elif kind == 2:  # first, middle, last pieces of one record
            buf = chunk
        elif kind == 3:
            buf += chunk
        elif kind == 4:
            yield buf + chunk


def wandb_history(path: str) -> list[dict[str, Any]]:
    """The history rows (one per `wandb.log`) of a W&B run file, `_step` included."""
    from wandb.proto import wandb_internal_pb2 as pb

    rows = []
    for data in _wandb_records(path):
        record = pb.Record()
        try:
            record.ParseFromString(data)
        except Exception:  # a record cut short by a killed run ends what can be read
            break
        if record.WhichOneof("record_type") == "history":
            rows.append(
                {
                    i.key or "/".join(i.nested_key): json.loads(i.value_json)
                    for i in record.history.item
                }
            )
    return rows


def wandb_run_files(wandb_dir: str, trial_id: str) -> list[str]:
    """Every run file W&B wrote for a trial (one per driver session: offline runs and online
    ones both keep a local `run-<id>.wandb`), oldest first."""
    return sorted(glob.glob(os.path.join(wandb_dir, f"*run-*-{trial_id}", "*.wandb")))


def wandb_last_step(wandb_dir: str, trial_id: str) -> int:
    """The highest `_step` a trial's W&B runs logged."""
    steps = [
        int(row["_step"])
        for path in wandb_run_files(wandb_dir, trial_id)
        for row in wandb_history(path)
        if "_step" in row
    ]
    return max(steps, default=NOTHING)
