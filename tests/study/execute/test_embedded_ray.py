"""The embedded Ray that `python -m study.run` starts when given no --address: what it starts,
and that closing it leaves no Ray process behind. Run in a subprocess: the shared test Ray is
never touched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.timeout(120)]

REPO = Path(__file__).resolve().parents[3]

CHILD = textwrap.dedent(
    """
    import json, sys, time
    from study.execute.cluster import connect
    from study.ray_internals import stop_autoscaler_monitor as _stop_autoscaler_monitor
    from ray._private import ray_constants, worker
    import psutil  # ships inside Ray: importing ray put it on sys.path

    assert "ray.tune" not in sys.modules
    connection = connect(None)
    assert connection.owned
    assert "study.execute.tuner" in sys.modules and "torch" not in sys.modules  # imported during init
    node = worker._global_node
    processes = {kind: [info.process for info in infos]
                 for kind, infos in node.all_processes.items()}
    raylet = psutil.Process(processes[ray_constants.PROCESS_TYPE_RAYLET][0].pid)
    time.sleep(3)  # prestarted workers would have been forked by now
    idle_workers = [p.pid for p in raylet.children(recursive=True)  # retitled ray::IDLE
                    if any(part.startswith("ray::IDLE") or "default_worker.py" in part
                           for part in p.cmdline())]
    _stop_autoscaler_monitor()
    after_stop = {kind: [p.poll() is None for p in ps] for kind, ps in processes.items()}
    connection.close()
    left = [p.pid for ps in processes.values() for p in ps if p.poll() is None]
    print(json.dumps({"idle_workers": idle_workers, "after_stop": after_stop, "left": left,
                      "monitor": ray_constants.PROCESS_TYPE_MONITOR}))
    """
)


def test_embedded_ray_prestarts_no_workers_and_stops_its_monitor_first():
    """No idle workers (Tune's actors never use them: they only slow the first trials); Tune
    imported while Ray starts; the autoscaler monitor killed while the GCS still runs (else
    shutdown waits 1 s for it); nothing left running after close()."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run(
        [sys.executable, "-c", CHILD], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=100,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["idle_workers"] == []
    alive = seen["after_stop"]
    assert alive.pop(seen["monitor"]) == [False]
    assert alive and all(all(flags) for flags in alive.values()), alive  # only the monitor
    assert seen["left"] == []


def test_a_study_without_trackers_imports_no_tracker_package(tmp_path: Path):
    """Tune counts a run's callbacks for Ray's usage statistics by importing Ray's MLflow and
    W&B integrations (mlflow and wandb themselves, with the trackers extra installed). With
    usage statistics off, as the CLI sets them, the driver no longer imports them."""
    code = textwrap.dedent(
        f"""
        import runpy, sys
        sys.argv = ["study.run", "--space", "smoke", "--storage", {str(tmp_path)!r}]
        try:
            runpy.run_module("study.run", run_name="__main__")
        except SystemExit as exc:
            assert not exc.code, exc.code
        print(sorted({{"mlflow", "wandb", "comet_ml"}} & set(sys.modules)))
        """
    )
    env = {
        k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_USAGE_STATS_ENABLED")
    }
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=110)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
