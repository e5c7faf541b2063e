"""Deterministic early stopping through the study service: the same space listed ascending
and descending, one and two trials at a time, stops the same trials at the same rungs."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from study.service import StudyOptions, run_study

SPACE = """\
description = "ASHA order: three lrs of one K, one near chance"
metric = "val_acc"
[fixed]
dataset = "digits"
trainer = "plain"
optimizer = "sgd"
total_steps = 24
eval_every = 4
k = 1
[grid]
lr = {lrs}
seed = [0]
"""
LRS = [0.0003, 0.03, 0.3]


def _stopped(storage: Path, tmp_path: Path, name: str, lrs: list[float], concurrent: int):
    space = tmp_path / f"{name}.toml"
    space.write_text(SPACE.format(lrs=lrs))
    outcome = run_study(
        StudyOptions(
            space=str(space), storage=str(storage), scheduler="asha", grace_period=2,
            reduction_factor=2, max_concurrent=concurrent,
        ),
        out=io.StringIO(),
    )  # fmt: skip
    assert outcome.exit_code == 0
    results = storage / name / "results"
    trials = pd.read_parquet(results / "trials.parquet")
    metrics = pd.read_parquet(results / "metrics")
    last = metrics.groupby("trial_id")["step"].max()
    stopped = trials[trials["status"] == "STOPPED"]
    chance = {
        lr: metrics.loc[metrics["trial_id"] == tid, "val_acc"].max()
        for tid, lr in zip(stopped["trial_id"], stopped["lr"], strict=True)
    }
    return {
        (lr, int(last[tid])) for tid, lr in zip(stopped["trial_id"], stopped["lr"], strict=True)
    }, chance


@pytest.mark.ray
@pytest.mark.timeout(1200)
def test_the_listing_order_and_the_concurrency_do_not_change_what_asha_stops(
    ray_session: Any, storage: Path, tmp_path: Path
) -> None:
    runs = {
        (order, concurrent): _stopped(
            storage, tmp_path, f"{order}{concurrent}",
            LRS if order == "asc" else LRS[::-1], concurrent,
        )
        for order in ("asc", "desc")
        for concurrent in (1, 2)
    }  # fmt: skip
    stopped = {key: run[0] for key, run in runs.items()}
    first = stopped[("asc", 1)]
    assert all(s == first for s in stopped.values()), stopped
    assert len(first) >= 1
    lrs = {lr for lr, _ in first}
    assert 0.0003 in lrs and 0.3 not in lrs  # the lr near chance loses its race
    assert runs[("asc", 1)][1][0.0003] < 0.3  # near chance (10 classes) up to its stop
