"""A trial's worker process is killed mid-trial: it resumes from its checkpoint, exactly."""

from __future__ import annotations

import io
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from ray import tune

import search_spaces
from study.service import StudyOptions, run_study
from trainables import run

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

TOTAL, EVERY, CHECKPOINT_EVERY = 300, 10, 3
OVERRIDES = {"k": 4, "total_steps": TOTAL, "eval_every": EVERY, "probe_size": 16}


class KillWorkerOnce(tune.Callback):
    """SIGKILLs the trial's process at its first result at or past `at_step`, once.

    Tune pickles callbacks with the experiment, so "once" lives in a file, not in memory.
    """

    def __init__(self, flag: Path, at_step: int) -> None:
        self.flag, self.at_step = str(flag), at_step

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info):
        if result.get("step", -1) >= self.at_step and not os.path.exists(self.flag):
            Path(self.flag).write_text(f"{result['pid']} {result['step']}")
            os.kill(result["pid"], signal.SIGKILL)


def test_killed_worker_resumes_from_checkpoint_with_no_gap_and_no_duplicate(
    ray_session: Any, storage: Path, tmp_path: Path
) -> None:
    flag = tmp_path / "killed"
    options = StudyOptions(
        space="smoke",
        storage=str(storage),
        overrides=[f"{k}={v}" for k, v in OVERRIDES.items()],
        checkpoint_every=CHECKPOINT_EVERY,
    )
    outcome = run_study(options, callbacks=[KillWorkerOnce(flag, TOTAL // 2)], out=io.StringIO())
    assert flag.exists(), "the worker was never killed"
    assert outcome.exit_code == 0 and outcome.counts == {"TERMINATED": 1}

    rows = pd.read_parquet(storage / "smoke" / "results" / "metrics").sort_values("step")
    assert rows["step"].tolist() == list(range(0, TOTAL + 1, EVERY))  # no gap, no duplicate
    # The first run's rows end at a checkpoint; the restored run wrote every later one.
    attempts = rows["attempt"].tolist()
    assert attempts == sorted(attempts) and set(attempts) == {0, 1}
    assert attempts.count(0) % CHECKPOINT_EVERY == 0
    killed_at = int(flag.read_text().split()[1])
    assert rows.loc[rows["attempt"] == 0, "step"].max() <= killed_at

    # And it continued exactly: the same records as one unbroken run in this process.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        config = {**search_spaces.get("smoke").fixed, **OVERRIDES}
        reference = pd.DataFrame(list(run(config)))
    finally:
        torch.set_num_threads(threads)
    for column in ("feature_updates", "train_loss", "test_acc", "kernel_distance_init"):
        np.testing.assert_allclose(
            rows[column].to_numpy(dtype=float), reference[column].to_numpy(dtype=float),
            rtol=1e-6, err_msg=column,
        )  # fmt: skip
