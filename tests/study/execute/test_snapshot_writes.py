"""Tune's experiment snapshot reaches the staging folder whole (study.ray_internals).

Tune rewrote `experiment_state-<session>.json` in place while the upload launched at the
previous snapshot could still be copying the folder to storage, so the upload could store an
empty snapshot over the good one: a SIGKILLed S3 study then could not be resumed (seen in a
full run: "the experiment state ... is unreadable (empty)"). These tests need Tune, not a Ray
instance.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from ray.tune.execution.tune_controller import TuneController

from study.ray_internals import _save_to_dir_atomically, write_snapshots_atomically

STATE = "experiment_state-2026-12-07_20-04-56.json"


class _Seen:
    """Encoded by Tune's JSON encoder through cloudpickle, in the middle of the snapshot: it
    reads what an upload copying the staging folder at that moment would read."""

    def __init__(self, target: Path, seen: list[str]) -> None:
        self.target, self.seen = target, seen

    def __reduce__(self) -> tuple:
        self.seen.append(self.target.read_text() if self.target.exists() else "<absent>")
        return (str, ("seen",))


class _Saver:
    """What `save_to_dir` reads of a TuneController, nothing more."""

    def __init__(self, staging: Path, runner_data: dict[str, Any]) -> None:
        self._storage = type("Storage", (), {"experiment_driver_staging_path": str(staging)})()
        self._runner_data, self._start_time, self._session_str = runner_data, 12.5, "session"
        self.experiment_state_file_name = STATE
        self.saved: list[str] = []
        self._search_alg = self._callbacks = self

    def _get_trial_checkpoints(self) -> dict[str, tuple[str, str]]:
        return {"a": ('{"trial_id": "a"}', '{"last_result": {}}')}

    def __getstate__(self) -> dict[str, Any]:
        return self._runner_data

    def save_to_dir(self, folder: str, session_str: str) -> None:
        self.saved.append(f"{Path(folder).name}/{session_str}")


def _save(save_to_dir: Any, staging: Path, runner_data: dict[str, Any]) -> _Saver:
    saver = _Saver(staging, runner_data)
    save_to_dir(saver)
    return saver


def test_an_upload_mid_snapshot_reads_the_previous_snapshot_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fails on Tune's own method: the reader in the middle of the second snapshot sees the
    file truncated (the empty object an upload stored)."""
    monkeypatch.setattr(TuneController, "save_to_dir", TuneController.save_to_dir)  # restored
    write_snapshots_atomically()
    write_snapshots_atomically()  # idempotent
    staging = tmp_path / "artifacts" / "driver_artifacts"
    _save(TuneController.save_to_dir, staging, {"round": 1})
    first = (staging / STATE).read_text()
    seen: list[str] = []
    _save(TuneController.save_to_dir, staging, {"round": 2, "x": _Seen(staging / STATE, seen)})
    assert seen == [first]
    assert json.loads((staging / STATE).read_text())["runner_data"]["round"] == 2
    assert sorted(os.listdir(staging)) == [STATE]  # no temporary in the uploaded folder
    assert sorted(os.listdir(staging.parent)) == ["driver_artifacts"]  # nor left beside it


def test_the_snapshot_is_the_one_tune_writes_and_the_pickles_follow(tmp_path: Path) -> None:
    """Byte for byte what Tune's own method writes, then the searcher's and callbacks' files."""
    tune_own = getattr(_save_to_dir_atomically, "tune_original", TuneController.save_to_dir)
    assert tune_own is not _save_to_dir_atomically
    data = {"round": 3, "fn": len}
    theirs = _save(tune_own, tmp_path / "theirs" / "driver_artifacts", data)
    ours = _save(_save_to_dir_atomically, tmp_path / "ours" / "driver_artifacts", data)
    assert (tmp_path / "ours" / "driver_artifacts" / STATE).read_bytes() == (
        tmp_path / "theirs" / "driver_artifacts" / STATE
    ).read_bytes()
    assert ours.saved == theirs.saved == ["driver_artifacts/session"] * 2
