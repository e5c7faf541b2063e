"""A plan is built from options without Ray, and every bad option that needs no cluster is
refused there: exit 2, one line, nothing written, before any Ray process could start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from study.errors import StudyError
from study.plan import plan_request
from study.plan.resources import embedded_cpus, embedded_problem
from study.request.options import StudyOptions, read_request
from study.store.fs import Storage, StudyPaths

REPO = Path(__file__).resolve().parents[3]

# Ray cannot be imported in the child: any path to it fails loudly instead of starting it.
NO_RAY = textwrap.dedent(
    """
    import importlib.abc, json, sys

    class NoRay(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "ray" or name.startswith("ray."):
                raise ImportError(f"{name} imported")
            return None

    sys.meta_path.insert(0, NoRay())
    """
)


def _child(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.run(
        [sys.executable, "-c", NO_RAY + textwrap.dedent(code), *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_a_plan_is_built_from_options_without_importing_ray(tmp_path: Path) -> None:
    done = _child(
        """
        from study.plan import plan_request
        from study.request.options import StudyOptions, read_request

        options = StudyOptions(space="k_sweep", storage=sys.argv[1], scheduler="asha")
        prepared = plan_request(read_request(options))
        loaded = sorted(m for m in sys.modules if m.split(".")[0] == "ray"
                        or m.startswith("study.execute"))
        print(json.dumps({"trials": prepared.plan.total_trials, "loaded": loaded,
                          "sweep": sorted(prepared.plan.sweep())}))
        """,
        str(tmp_path / "studies"),
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["loaded"] == [] and out["trials"] > 1 and {"k", "lr", "seed"} <= set(out["sweep"])
    assert not (tmp_path / "studies").exists()  # a request writes nothing


def test_a_bad_option_exits_2_before_any_ray_process_starts(tmp_path: Path) -> None:
    """--cpus-per-trial beyond this machine was refused only once Ray had started (and the
    study folder had been created, then removed): now the plan refuses it, without Ray."""
    storage = tmp_path / "studies"
    done = _child(
        """
        from study.run import main
        rc = main(["--space", "smoke", "--cpus-per-trial", sys.argv[2], "--storage", sys.argv[1]])
        print(json.dumps({"rc": rc, "ray": "ray" in sys.modules}))
        """,
        str(storage),
        str(embedded_cpus() + 1),
    )
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out == {"rc": 2, "ray": False}, done.stderr
    err = done.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "--cpus-per-trial" in err[0], err
    assert not storage.exists()


def test_the_embedded_cpu_check_applies_only_where_the_study_starts_its_own_ray(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("study.plan.resources.ray_running_here", lambda: False)
    cpus = embedded_cpus()
    assert embedded_problem(cpus, None) is None
    assert f"has {cpus} CPUs" in (embedded_problem(cpus + 0.5, None) or "")
    assert embedded_problem(cpus + 1, "10.0.0.1:6379") is None  # a cluster's nodes: later
    monkeypatch.setattr("study.plan.resources.ray_running_here", lambda: True)
    assert embedded_problem(cpus + 1, None) is None  # the Ray it reuses: checked once connected


def test_mlflow_on_remote_storage_without_a_tracking_uri_is_refused_by_the_plan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """This was refused only when the Tuner was built, after Ray had started."""
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "file:///elsewhere")  # the given environ wins
    local = read_request(StudyOptions(space="smoke", storage=str(tmp_path), trackers=["mlflow"]))
    remote = StudyPaths(Storage("mock:///studies", pafs._MockFileSystem(), "studies"), "smoke")
    request = type(local)(spec=local.spec, paths=remote, resume=False)
    with pytest.raises(StudyError, match="needs MLFLOW_TRACKING_URI"):
        plan_request(request, environ={})
    assert plan_request(request, environ={"MLFLOW_TRACKING_URI": "file:///x"}).plan
    assert plan_request(local, environ={}).plan  # a local study keeps its runs in its folder
