"""Issue #5, fault 3: a worker node of a local multi-node cluster is killed mid-study.

Its trials move to the remaining node, continue from their checkpoints and finish; every
(trial, step) is stored once. The cluster (head without CPUs + 2 one-CPU workers) is the one
tests/test_study_cluster.py builds, started again for this module.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest

from tests.test_study_cluster import REPO, _env, _kill_group, cluster  # noqa: F401  (fixture)

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(420)]

# 13 records per trial, about 4 s warm: the node is killed while its trial has three quarters
# of its steps left (600 steps, 1 s warm, once let the trial finish before the kill landed)
TOTAL, EVERY = 2400, 200


def _psutil() -> Any:
    """psutil, which ships inside Ray: importing ray puts it on sys.path."""
    import importlib

    importlib.import_module("ray")
    return importlib.import_module("psutil")


def _raylet_group(node8: str) -> int:
    """The process group of the `ray start` whose raylet has the node id starting `node8`."""
    psutil = _psutil()

    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if "raylet" in (proc.info["name"] or "") and f"node_id={node8}" in cmdline.replace(
            "node-id", "node_id"
        ):
            return os.getpgid(proc.pid)
    raise AssertionError(f"no raylet for node {node8}")


def _mid_trial_node(metrics: Path) -> str | None:
    """The node of a trial that has stored rows for at most its first quarter."""
    for file in metrics.glob("*.parquet"):
        with contextlib.suppress(OSError, ValueError):
            table = pq.read_table(file, columns=["step", "node"]).to_pydict()
            if max(table["step"]) <= TOTAL // 4:
                return table["node"][-1]
    return None


def test_killed_worker_node_moves_its_trials_to_the_other(
    cluster: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    storage, log = tmp_path / "studies", tmp_path / "driver.log"
    storage.mkdir()
    run = [sys.executable, "-m", "study.run", "--space", "smoke", "--address", cluster,
           "--storage", str(storage), "--set", f"total_steps={TOTAL}", "--set",
           f"eval_every={EVERY}", "--checkpoint-every", "2"]  # fmt: skip
    with open(log, "ab") as out:
        driver = subprocess.Popen(
            run, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            env=_env(),
        )  # fmt: skip
    try:
        deadline, node = time.time() + 240, None
        while node is None:
            assert driver.poll() is None, log.read_text()[-3000:]
            assert time.time() < deadline, "no trial ever got half way"
            node = _mid_trial_node(storage / "smoke" / "results" / "metrics")
            time.sleep(0.1)
        os.killpg(_raylet_group(node.split("/")[-1]), signal.SIGKILL)
        driver.wait(timeout=300)
    finally:
        _kill_group(driver)
    output = log.read_text()
    assert driver.returncode == 0 and "4/4 trials finished" in output, output[-3000:]

    results = storage / "smoke" / "results"
    trials = pd.read_parquet(results / "trials.parquet")
    assert len(trials) == 4 and set(trials["status"]) == {"TERMINATED"}
    metrics = pd.read_parquet(results / "metrics")
    assert not metrics.duplicated(["trial_id", "step"]).any()
    for _, rows in metrics.groupby("trial_id"):
        assert sorted(rows["step"]) == list(range(0, TOTAL + 1, EVERY))
    # A trial that ran on the killed node finished on the other, from its checkpoint.
    nodes = metrics.groupby("trial_id")["node"].nunique()
    assert (nodes > 1).any(), metrics[["trial_id", "step", "node", "attempt"]]
    for trial_id in nodes[nodes > 1].index:
        rows = metrics[metrics["trial_id"] == trial_id].sort_values("step")
        assert rows["node"].iloc[0] == node and rows["node"].iloc[-1] != node
        assert rows["attempt"].iloc[-1] >= 1
