"""Shared fixtures: one Ray instance for the whole run, tiny study options, tmp storage.

Ray reads some settings when it is imported, so they are set here, before any test module
imports it. Tests that need their own Ray (a multi-node cluster, a driver to kill) run it in
subprocesses with explicit addresses and ports and never touch this instance.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# Fast, quiet, loopback-only Ray for tests: frequent experiment snapshots, one pending trial
# at a time, no usage stats (and study.execute.cluster.LOOPBACK_ENV).
RAY_TEST_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
    "TUNE_GLOBAL_CHECKPOINT_S": "0.1",
    "TUNE_MAX_PENDING_TRIALS_PG": "1",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    "RAY_AIR_NEW_OUTPUT": "0",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # the shared instance binds to 127.0.0.1 only
}
for _key, _value in RAY_TEST_ENV.items():
    os.environ.setdefault(_key, _value)

# One intra-op torch thread per test process, as Ray gives a trial of one CPU: the fast tier runs
# two pytest workers on two cores, and torch's default of a thread per core makes each worker's
# threads spin-wait on the other's, which costs more than threads save on these tiny tensors.
# Set before anything imports torch (it reads the variable once, at import).
os.environ.setdefault("OMP_NUM_THREADS", "1")

# A Plan's param_space() and search_alg() reach the Tune builders that study.execute.search
# registers when imported (study.plan imports no Ray, so it cannot import them itself); tests
# that call those methods on a Plan find them here. The import does not import Ray.
import study.execute.search  # noqa: E402, F401

RAY_CPUS = 2
RAY_GPUS = 1  # a logical GPU: lets CI schedule fractional-GPU trials on a CPU-only machine


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that starts or shares a Ray instance, or a cluster, is in the slow tier:
    `make test-fast` (`-m "not slow"`) then starts no Ray at all. Tests slow for other reasons
    (subprocesses, kill/resume, stress) carry `@pytest.mark.slow` themselves."""
    for item in items:
        uses_ray = "ray_session" in getattr(item, "fixturenames", ())
        if uses_ray or item.get_closest_marker("ray") or item.get_closest_marker("cluster"):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def ray_session() -> Iterator[object]:
    """The one in-process Ray instance that every test which can share it uses."""
    import ray

    if not ray.is_initialized():
        ray.init(
            address="local",  # never attach to a stale cluster a leftover file names
            num_cpus=RAY_CPUS,
            num_gpus=RAY_GPUS,
            object_store_memory=150 * 2**20,
            include_dashboard=False,
            log_to_driver=False,
        )
    yield ray
    ray.shutdown()


@pytest.fixture
def storage(tmp_path: Path) -> Path:
    """An empty storage folder for studies."""
    path = tmp_path / "studies"
    path.mkdir()
    return path
