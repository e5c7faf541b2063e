"""Fractional GPUs: four 0.25-GPU trials share the one (logical) GPU at the same time."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from ray import tune

from study.service import StudyOptions, run_study

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]


class ResourceView(tune.Callback):
    """Samples Tune's running trials and Ray's free GPUs after every controller step."""

    def __init__(self) -> None:
        self.samples: list[tuple[int, float]] = []

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        import ray

        running = sum(t.status == "RUNNING" for t in trials)
        self.samples.append((running, ray.available_resources().get("GPU", 0.0)))


def test_four_quarter_gpu_trials_run_concurrently(
    ray_session: Any, storage: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TUNE_MAX_PENDING_TRIALS_PG", "4")  # start all four actors at once
    view = ResourceView()
    options = StudyOptions(
        space="smoke",
        storage=str(storage),
        gpus_per_trial=0.25,
        cpus_per_trial=0.5,  # 4 trials x 0.5 CPU fit the shared instance's 2 CPUs
        overrides=["total_steps=200", "eval_every=20", "probe_size=0"],
    )
    outcome = run_study(options, callbacks=[view], out=io.StringIO())
    assert outcome.exit_code == 0 and outcome.counts == {"TERMINATED": 4}

    # Ray's resource view: at some moment all four ran and the whole GPU was handed out.
    assert max(running for running, _ in view.samples) == 4
    assert any(running == 4 and free_gpu < 1e-6 for running, free_gpu in view.samples)

    # The trials' own clocks: each trial's start (recorded as its function began) and its
    # last report; all four were running at one instant.
    results = storage / "smoke" / "results"
    metrics = pd.read_parquet(results / "metrics")
    ended = metrics.groupby("trial_id")["reported_at"].max()
    started = pd.read_parquet(results / "trials.parquet").set_index("trial_id")["started_at"]
    assert len(ended) == len(started) == 4
    assert started.max() < ended.min(), (started, ended)
    # No CUDA here: a trial given a logical GPU falls back to the CPU.
    assert set(metrics["device"]) == {"cpu"}
