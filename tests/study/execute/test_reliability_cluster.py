"""Issue #5, fault 3: a worker node of a local multi-node cluster is killed mid-study.

Its trials move to the remaining node, continue from their checkpoints and finish; every
(trial, step) is stored once. The cluster (head without CPUs + 2 one-CPU workers) is the one
tests/study/execute/test_study_cluster.py builds, started again for this module.
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

from tests.study.execute.test_study_cluster import REPO, _env, _kill_group, cluster  # noqa: F401  (fixture)

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(420)]

# 13 records per trial, about 4 s warm, a checkpoint every 2 records (steps 200, 600, 1000, ...).
# The node is killed while its trial has stored past its first checkpoint but not half its
# steps (600-step trials, 1 s warm, once finished before the kill landed). Past the first
# checkpoint, because a kill at the trial's very first file could come before Tune has taken
# that checkpoint: the trial would then restart from scratch and its rows never change node.
TOTAL, EVERY = 2400, 200


def _psutil() -> Any:
    """psutil, which ships inside Ray: importing ray puts it on sys.path."""
    import importlib

    importlib.import_module("ray")
    return importlib.import_module("psutil")


def _kill_node(node8: str) -> None:
    """SIGKILL a worker node as a machine failure would: the process group of the `ray start`
    whose raylet has the node id starting `node8`, and every process under that raylet. Ray
    gives each worker its own process group, so killing the raylet's group alone left the
    trial's actor running on until it noticed, and once it finished its trial there."""
    psutil = _psutil()

    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if "raylet" in (proc.info["name"] or "") and f"node_id={node8}" in cmdline.replace(
            "node-id", "node_id"
        ):
            workers = proc.children(recursive=True)
            os.killpg(os.getpgid(proc.pid), signal.SIGKILL)
            for worker in workers:
                with contextlib.suppress(psutil.NoSuchProcess):
                    worker.kill()
            return
    raise AssertionError(f"no raylet for node {node8}")


def _mid_trial_node(metrics: Path) -> str | None:
    """The node of a trial whose stored rows go past its first checkpoint (step 200), up to
    half its steps. The rows are written before each checkpoint is reported, and Tune's
    synchronous reporting lets a report return only when the driver asks for the next
    result, after it has taken the previous one: by then that first checkpoint is Tune's."""
    for file in metrics.glob("*.parquet"):
        with contextlib.suppress(OSError, ValueError):
            table = pq.read_table(file, columns=["step", "node"]).to_pydict()
            if 2 * EVERY < max(table["step"]) <= TOTAL // 2:
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
        _kill_node(node.split("/")[-1])
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
