"""Experiment trackers, offline: each one's own files hold the metrics the Parquet rows hold."""

from __future__ import annotations

import glob
import io
import json
import os
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from study.errors import StudyError
from study.service import StudyOptions, prepare, run_study

SPACE = """\
description = "trackers: one tiny trial"
metric = "val_acc"
[fixed]
dataset = "digits"
trainer = "linearised"
optimizer = "sgd"
total_steps = 8
eval_every = 4
lr = 0.1
k = 1
seed = 0
"""


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


def _wandb_history(path: str) -> list[dict[str, Any]]:
    from wandb.proto import wandb_internal_pb2 as pb

    rows = []
    for data in _wandb_records(path):
        record = pb.Record()
        record.ParseFromString(data)
        if record.WhichOneof("record_type") == "history":
            rows.append(
                {
                    i.key or "/".join(i.nested_key): json.loads(i.value_json)
                    for i in record.history.item
                }
            )
    return rows


def _tensorboard_scalars(path: str, tag: str) -> dict[int, float]:
    """step → value of `tag` in a TFRecord event file (length, CRC, event, CRC)."""
    from tensorboardX.proto import event_pb2

    data, pos, out = Path(path).read_bytes(), 0, {}
    while pos + 12 <= len(data):
        (length,) = struct.unpack("<Q", data[pos : pos + 8])
        event = event_pb2.Event()
        event.ParseFromString(data[pos + 12 : pos + 12 + length])
        pos += 12 + length + 4
        for value in event.summary.value:
            if value.tag == tag:
                out[event.step] = value.simple_value
    return out


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_mlflow_wandb_and_tensorboard_each_hold_the_reported_metrics_offline(
    ray_session: Any, storage: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    space = tmp_path / "trk.toml"
    space.write_text(SPACE)
    outcome = run_study(
        StudyOptions(
            space=str(space), storage=str(storage), trackers=["mlflow", "wandb", "tensorboard"]
        ),
        out=io.StringIO(),
    )
    assert outcome.exit_code == 0
    study = storage / "trk"
    rows = pd.read_parquet(study / "results" / "metrics").sort_values("step")
    (trial_id,) = rows["trial_id"].unique()
    truth = dict(zip(rows["step"].tolist(), rows["val_acc"].tolist(), strict=True))
    assert len(truth) == 3  # steps 0, 4, 8

    # MLflow: a local file store in the study's folder, one run per trial
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=f"file://{study / 'mlruns'}")
    experiment = client.get_experiment_by_name("trk")
    (run,) = client.search_runs([experiment.experiment_id])
    history = client.get_metric_history(run.info.run_id, "val_acc")
    got = sorted(m.value for m in history)
    assert got == pytest.approx(sorted(truth.values()))

    # W&B offline: the run's own .wandb file holds every reported row
    (wandb_file,) = glob.glob(str(study / "wandb" / f"offline-run-*{trial_id}" / "*.wandb"))
    logged = {r["step"]: r["val_acc"] for r in _wandb_history(wandb_file) if "val_acc" in r}
    assert logged == pytest.approx(truth)

    # TensorBoard: event files in the trial's folder, one scalar per report
    (events,) = glob.glob(str(study / f"*{trial_id}*" / "events.out.tfevents.*"))
    scalars = _tensorboard_scalars(events, "ray/tune/val_acc")
    assert sorted(scalars.values()) == pytest.approx(sorted(truth.values()), rel=1e-6)


def test_a_tracker_that_is_not_installed_is_refused_naming_its_extra(
    storage: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a)
    )
    space = tmp_path / "trk.toml"
    space.write_text(SPACE)
    with pytest.raises(StudyError, match=r"pip install 'ilstudy\[wandb\]'"):
        prepare(StudyOptions(space=str(space), storage=str(storage), trackers=["wandb"]))
    assert list(storage.iterdir()) == []


def test_the_cli_refuses_a_missing_tracker_with_exit_2_and_one_line(tmp_path: Path) -> None:
    code = (
        "import importlib.util, runpy, sys\n"
        "real = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda n, *a: None if n == 'mlflow' else real(n, *a)\n"
        "sys.argv = ['study.run', '--space', 'k_sweep', '--smoke', '--tracker', 'mlflow',\n"
        f"            '--storage', {str(tmp_path / 's')!r}]\n"
        "runpy.run_module('study.run', run_name='__main__')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "ilstudy[mlflow]" in lines[0] and "Traceback" not in done.stderr
    assert not (tmp_path / "s").exists()


def test_trackers_bring_no_torch_into_the_driver(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from study.execute.tracker_callbacks import tracker_callbacks\n"
        f"tracker_callbacks(['mlflow', 'wandb', 'tensorboard'], 'x', {str(tmp_path)!r})\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    env = {**os.environ, "WANDB_MODE": "offline"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr
