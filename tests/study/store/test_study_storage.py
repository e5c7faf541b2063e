"""Names, storage, atomic writes, idempotent rows and the shared-storage check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

import study.execute.cluster as cluster
import study.store.fs as storage_module
from study.errors import StudyError
from study.store.fs import StudyPaths, check_name, resolve_storage, write_parquet_atomic
from study.store.layout import METRICS_SCHEMA, table, unique_by_step, write_trial_metrics


@pytest.mark.parametrize("name", ["k_sweep", "run-2", "a.b", "X1"])
def test_plain_names_are_accepted(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "..", "../x", "a/b", "/abs", ".hidden", "a\\b", "x" * 101])
def test_names_that_could_leave_the_storage_folder_are_refused(name: str) -> None:
    with pytest.raises(StudyError, match="is not allowed"):
        check_name(name)


def test_study_files_live_under_storage_and_name(tmp_path: Path) -> None:
    paths = StudyPaths(resolve_storage(str(tmp_path / "s")), "k_sweep")
    for path in (paths.spec, paths.metrics, paths.trials):
        assert path.startswith(str(tmp_path / "s" / "k_sweep") + "/")
    assert not (tmp_path / "s").exists()  # resolving creates nothing


def test_a_file_as_storage_is_refused(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    with pytest.raises(StudyError, match="is a file"):
        resolve_storage(str(tmp_path / "f"))


def _row(step: int, loss: float) -> dict[str, Any]:
    return {"study": "s", "trial_id": "t", "step": step, "train_loss": loss, "k": 1.0}


def test_rows_are_unique_per_step_and_the_latest_wins() -> None:
    rows = unique_by_step([_row(10, 1.0), _row(0, 2.0), _row(10, 3.0)])
    assert [(r["step"], r["train_loss"]) for r in rows] == [(0, 2.0), (10, 3.0)]


def test_trial_metrics_are_replaced_whole_and_atomically(tmp_path: Path) -> None:
    fs = resolve_storage(str(tmp_path)).fs
    write_trial_metrics(fs, str(tmp_path), "t", [_row(0, 1.0), _row(10, 1.0)])
    write_trial_metrics(fs, str(tmp_path), "t", [_row(0, 1.0), _row(10, 0.5), _row(10, 0.5)])
    written = pq.read_table(tmp_path / "metrics" / "t.parquet")
    assert written.schema == METRICS_SCHEMA
    assert written.column("step").to_pylist() == [0, 10]
    assert written.column("train_loss").to_pylist() == [1.0, 0.5]
    assert sorted(p.name for p in (tmp_path / "metrics").iterdir()) == ["t.parquet"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fs = resolve_storage(str(tmp_path)).fs
    path = str(tmp_path / "x.parquet")
    write_parquet_atomic(fs, path, table([_row(0, 1.0)], METRICS_SCHEMA))

    def crash(src: str, dst: str) -> None:
        assert Path(src).name.startswith(".x.parquet.") and src.endswith(".tmp")
        raise OSError("disk gone")

    monkeypatch.setattr(storage_module.os, "replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        write_parquet_atomic(fs, path, table([_row(0, 1.0), _row(10, 1.0)], METRICS_SCHEMA))
    assert pq.read_table(path).num_rows == 1
    assert [p.name for p in tmp_path.iterdir()] == ["x.parquet"]


def test_read_parquet_gives_the_columns_asked_and_refuses_one_the_file_lacks(
    tmp_path: Path,
) -> None:
    """Callers read `["step"]` and catch Arrow's errors: a missing column must raise, as
    `pq.read_table` did, not come back as a table without it (what `ParquetFile.read` does)."""
    fs = resolve_storage(str(tmp_path)).fs
    path = str(tmp_path / "x.parquet")
    written = table([_row(0, 1.0), _row(10, 0.5)], METRICS_SCHEMA)
    write_parquet_atomic(fs, path, written)
    assert storage_module.read_parquet(fs, path).equals(written)
    steps = storage_module.read_parquet(fs, path, ["train_loss", "step"])
    assert steps.column_names == ["train_loss", "step"]
    assert steps.column("step").to_pylist() == [0, 10]
    with pytest.raises(pa.ArrowInvalid, match="nope"):
        storage_module.read_parquet(fs, path, ["step", "nope"])


NODES = [{"NodeID": "a" * 56, "NodeManagerAddress": "10.0.0.1", "Alive": True, "Resources": {}},
         {"NodeID": "b" * 56, "NodeManagerAddress": "10.0.0.2", "Alive": True, "Resources": {}}]  # fmt: skip


def test_multi_node_storage_must_exist_and_be_seen_by_every_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cluster, "alive_nodes", lambda: NODES)
    with pytest.raises(StudyError, match="does not exist; on a multi-node cluster"):
        cluster.check_shared_storage(resolve_storage(str(tmp_path / "missing")))
    seen: list[str] = []

    def blind(path: str, nodes: list) -> list[str]:
        seen.append(path)
        assert Path(path).exists() and Path(path).parent == tmp_path
        return ["10.0.0.2/bbbbbbbb"]

    monkeypatch.setattr(cluster, "_nodes_not_seeing", blind)
    with pytest.raises(StudyError, match=r"is not shared: node\(s\) 10.0.0.2/bbbbbbbb"):
        cluster.check_shared_storage(resolve_storage(str(tmp_path)))
    assert seen and not Path(seen[0]).exists()  # the probe file is removed again
    mock = pafs.FileSystem.from_uri("mock:///studies")[0]  # a non-local filesystem
    cluster.check_shared_storage(storage_module.Storage("mock:///studies", mock, "studies"))


def test_a_single_node_needs_no_shared_storage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cluster, "alive_nodes", lambda: NODES[:1])
    cluster.check_shared_storage(resolve_storage(str(tmp_path / "anything")))


@pytest.mark.ray
@pytest.mark.timeout(120)
def test_the_node_probe_runs_on_each_node(ray_session: Any, tmp_path: Path) -> None:
    nodes = cluster.alive_nodes()
    (tmp_path / "probe").touch()
    assert cluster._nodes_not_seeing(str(tmp_path / "probe"), nodes) == []
    assert len(cluster._nodes_not_seeing(str(tmp_path / "absent"), nodes)) == len(nodes)


def test_the_lock_is_the_study_lock_file_the_readme_names(tmp_path: Path) -> None:
    """The layout move renamed the lock to study.store.lock by a sweep of module names; tools and
    people that look for `<storage>/<name>/study.lock` (README, "Locking") missed a held lock."""
    from study.store.lock import acquire, release

    experiment = tmp_path / "s"
    held = acquire(pafs.LocalFileSystem(), str(experiment), create_dir=True)
    try:
        assert [p.name for p in experiment.iterdir()] == ["study.lock"]
    finally:
        release(held)
    assert not (experiment / "study.lock").exists()
