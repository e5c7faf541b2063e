"""A reference arm runs beside the grid through Tune, once per seed, and survives a resume."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import search_spaces
from study.service import EXIT_INTERRUPTED, StudyOptions, run_study
from tests.study.plan.test_study_schedulers import InterruptAfter

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]


def test_k_sweep_smoke_runs_its_adam_reference_and_a_resume_adds_no_copy(
    ray_session: Any, storage: Path, tmp_path: Path
) -> None:
    flag = tmp_path / "interrupted"
    options = StudyOptions(space="k_sweep", storage=str(storage), smoke=True, max_concurrent=1)
    first = run_study(options, callbacks=[InterruptAfter(flag, 1)], out=io.StringIO())
    assert flag.exists() and first.exit_code == EXIT_INTERRUPTED
    again = run_study(
        StudyOptions(resume=True, name="k_sweep", storage=str(storage)), out=io.StringIO()
    )
    # the smoke grid (K = 1 and ∞ at one lr and seed) and every Adam reference lr, once each
    space = search_spaces.get("k_sweep").smoke_version()
    adam = sorted(ref["lr"] for ref in space.references)
    assert again.exit_code == 0 and again.finished == again.total == 2 + len(adam)
    trials = pd.read_parquet(storage / "k_sweep" / "results" / "trials.parquet")
    arms = sorted(
        zip(trials["trainer"], trials["optimizer"], trials["k"], trials["lr"], strict=True)
    )
    assert arms == [
        ("linearised", "sgd", 1.0, 0.05),
        ("linearised", "sgd", float("inf"), 0.05),
        *[("plain", "adam", 1.0, lr) for lr in adam],
    ]
    assert set(trials["status"]) == {"TERMINATED"}
    metrics = pd.read_parquet(storage / "k_sweep" / "results" / "metrics")
    assert metrics.groupby("trial_id")["step"].apply(lambda s: s.is_unique).all()
