"""Carrying ERROR from trials.parquet into Tune's snapshot: only where Tune's is stale."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from study.execute.resume import mark_errored, reconcile_errored
from study.store.fs import StudyPaths, resolve_storage


def _pair(trial_id: str, status: str) -> list[str]:
    trial = {"trial_id": trial_id, "status": status, "config": {"lr": 0.1}, "x": float("inf")}
    return [json.dumps(trial), json.dumps({"error_filename": None, "num_failures": 1})]


def _state(*pairs: list[str]) -> dict:
    return {"trial_data": list(pairs), "runner_data": {}, "stats": {}}


def _statuses(state: dict) -> dict[str, str]:
    return {json.loads(a)["trial_id"]: json.loads(a)["status"] for a, _ in state["trial_data"]}


def test_only_unfinished_trials_recorded_as_errored_change() -> None:
    state = _state(
        _pair("a", "RUNNING"), _pair("b", "PENDING"), _pair("c", "TERMINATED"),
        _pair("d", "ERROR"), _pair("e", "RUNNING"),
    )  # fmt: skip
    changed = mark_errored(state, {"a", "b", "c", "d"})
    assert changed == ["a", "b"]
    assert _statuses(state) == {
        "a": "ERROR", "b": "ERROR", "c": "TERMINATED", "d": "ERROR", "e": "RUNNING"
    }  # fmt: skip
    metadata = json.loads(state["trial_data"][0][1])
    assert metadata == {"error_filename": "error.txt", "num_failures": 1}
    assert json.loads(state["trial_data"][0][0])["x"] == float("inf")  # values survive


def _study(tmp_path: Path, statuses: dict[str, str], snapshot: dict) -> StudyPaths:
    paths = StudyPaths(resolve_storage(str(tmp_path)), "s")
    (tmp_path / "s" / "results").mkdir(parents=True)
    table = pa.table({"trial_id": list(statuses), "status": list(statuses.values())})
    pq.write_table(table, paths.trials)
    (tmp_path / "s" / "experiment_state-2026-01-01_00-00-00.json").write_text("{}")
    (tmp_path / "s" / "experiment_state-2026-01-02_00-00-00.json").write_text(json.dumps(snapshot))
    return paths


def test_the_newest_snapshot_is_rewritten_and_a_right_one_left_alone(tmp_path: Path) -> None:
    snapshot = _state(_pair("a", "RUNNING"), _pair("b", "RUNNING"))
    paths = _study(tmp_path, {"a": "ERROR", "b": "RUNNING"}, snapshot)
    newest = tmp_path / "s" / "experiment_state-2026-01-02_00-00-00.json"
    assert reconcile_errored(paths) == ["a"]
    assert _statuses(json.loads(newest.read_text())) == {"a": "ERROR", "b": "RUNNING"}
    assert (tmp_path / "s" / "experiment_state-2026-01-01_00-00-00.json").read_text() == "{}"

    before = newest.stat().st_mtime_ns, newest.read_text()
    assert reconcile_errored(paths) == []  # already agrees: not written again
    assert (newest.stat().st_mtime_ns, newest.read_text()) == before


def test_no_trials_file_changes_nothing(tmp_path: Path) -> None:
    paths = _study(tmp_path, {}, _state(_pair("a", "RUNNING")))
    (tmp_path / "s" / "results" / "trials.parquet").unlink()
    assert reconcile_errored(paths) == []
