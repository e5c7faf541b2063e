"""Issue 23, item 2: values verified, not just presence. The content checksum of every results
file, `python -m study.status --verify`, and the resume's rebuild from the source with the
most rows (its checkpoints, then Tune's result.json), or the file named."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from study.execute.resume import verify_finished
from study.execute.trainable import ROWS_FILE
from study.status import main as status_main
from study.store.checksum import (
    CHECKSUM_KEY,
    MISMATCH,
    NO_CHECKSUM,
    OK,
    checksum_state,
    content_digest,
    with_checksum,
)
from study.store.fs import StudyPaths, resolve_storage, write_parquet_atomic
from study.store.layout import (
    METRICS_SCHEMA,
    TRIALS_SCHEMA,
    config_columns,
    metric_columns,
    metrics_file,
    table,
    utc,
    write_trial_metrics,
)
from study.store.verify import reported_rows, verify_study
from tests.oracles import tiny_config

STEPS = [0, 10, 20, 30, 40]
CONFIG = tiny_config(k=5, total_steps=40)


def _result(step: int) -> dict[str, Any]:
    """What the trial reports to Tune for a record at `step`."""
    return {"step": step, "feature_updates": step // 5, "train_loss": 1.0 / (step + 1),
            "test_acc": 0.5 + step / 1000, "diverged": False, "attempt": 0, "device": "cpu",
            "node": "n", "ilstudy_version": "v", "torch_version": "t",
            "reported_at": 1.8e9 + step}  # fmt: skip


def _row(trial_id: str, step: int) -> dict[str, Any]:
    """The trial's own row for that record (its reported_at is the record's, a little earlier)."""
    result = _result(step)
    return {"study": "s", "trial_id": trial_id, **config_columns(CONFIG), **metric_columns(result),
            **{k: result[k] for k in ("attempt", "device", "node", "ilstudy_version")},
            "torch_version": "t", "reported_at": utc(result["reported_at"] - 0.5)}  # fmt: skip


def _rows(trial_id: str, steps: list[int]) -> pa.Table:
    return table([_row(trial_id, s) for s in steps], METRICS_SCHEMA)


def _zeroed(t: pa.Table, column: str = "test_acc") -> pa.Table:
    """`column` set to 0 in every row, the schema's metadata (its checksum) kept."""
    i = t.schema.get_field_index(column)
    return t.set_column(i, t.schema.field(column), pa.array([0.0] * t.num_rows))


# ---- the checksum ----------------------------------------------------------------------------
def test_the_checksum_covers_every_value_and_survives_a_parquet_round_trip(tmp_path: Path):
    fs = pafs_local()
    write_trial_metrics(fs, str(tmp_path), "a", [_row("a", s) for s in STEPS])
    stored = pq.read_table(metrics_file(str(tmp_path), "a"))
    assert CHECKSUM_KEY in stored.schema.metadata and checksum_state(stored) == OK
    assert checksum_state(_zeroed(stored)) == MISMATCH
    assert checksum_state(stored.slice(0, 4)) == MISMATCH  # a row fewer
    assert checksum_state(_rows("a", STEPS)) == NO_CHECKSUM  # a file written before checksums
    # NaN equals NaN, -0.0 is not 0.0, and metadata is not content
    one = pa.table({"x": [math.nan, 0.0]})
    assert content_digest(one) == content_digest(pa.table({"x": [float("nan"), 0.0]}))
    assert content_digest(one) != content_digest(pa.table({"x": [math.nan, -0.0]}))
    assert content_digest(one) == content_digest(one.replace_schema_metadata({b"k": b"v"}))
    assert content_digest(pa.table({"x": [1]})) != content_digest(pa.table({"x": [1.0]}))


def pafs_local() -> Any:
    import pyarrow.fs as pafs

    return pafs.LocalFileSystem()


# ---- python -m study.status --verify ---------------------------------------------------------
def _study(tmp_path: Path, trials: dict[str, str]) -> StudyPaths:
    """A study folder with a checksummed trials.parquet and a metrics file per trial."""
    paths = StudyPaths(resolve_storage(str(tmp_path)), "s")
    rows = [{"study": "s", "trial_id": t, "status": status, **config_columns(CONFIG),
             **metric_columns(_result(40)), "logdir": f"trial_{t}"}
            for t, status in trials.items()]  # fmt: skip
    write_parquet_atomic(paths.storage.fs, paths.trials, with_checksum(table(rows, TRIALS_SCHEMA)))
    for trial_id in trials:
        write_trial_metrics(paths.storage.fs, paths.results, trial_id, _rows(trial_id, STEPS).to_pylist())  # fmt: skip
    return paths


def test_verify_names_each_altered_or_missing_file_with_its_trial_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    paths = _study(tmp_path, {"a": "TERMINATED", "b": "TERMINATED", "c": "RUNNING"})
    argv = ["s", "--storage", str(tmp_path), "--verify"]
    assert status_main(argv) == 0
    assert "verified 4 files of study s: 4 ok" in capsys.readouterr().out
    a, b = metrics_file(paths.results, "a"), metrics_file(paths.results, "b")
    pq.write_table(_zeroed(pq.read_table(a)), a)  # test_acc by 0, the checksum as it was
    Path(b).unlink()  # a finished trial's rows gone
    assert status_main(argv) == 1
    out = capsys.readouterr().out
    assert f"mismatch: trial a: {a} (its values differ from the checksum" in out, out
    assert f"missing: trial b: {b}" in out, out
    assert "trial c" not in out  # an unfinished trial's file is fine
    assert status_main([*argv, "--json"]) == 1
    view = json.loads(capsys.readouterr().out)
    assert view["ok"] is False and {f["state"] for f in view["files"]} == {"ok", "mismatch", "missing"}  # fmt: skip
    assert status_main(["nope", "--storage", str(tmp_path), "--verify"]) == 2


def test_files_written_before_checksums_read_as_no_checksum_and_exit_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    paths = _study(tmp_path, {"a": "TERMINATED"})
    pq.write_table(_rows("a", STEPS), metrics_file(paths.results, "a"))  # an older ilstudy's
    pq.write_table(table([], TRIALS_SCHEMA), paths.trials)
    checks = verify_study(paths, ["a"])
    assert [c.state for c in checks] == [NO_CHECKSUM, NO_CHECKSUM] and not any(
        c.bad for c in checks
    )
    assert status_main(["s", "--storage", str(tmp_path), "--verify"]) == 0
    assert "2 no checksum" in capsys.readouterr().out


# ---- the resume's rebuild --------------------------------------------------------------------
def _finished_trial(paths: StudyPaths, checkpoint_steps: list[int], logged: list[int]) -> str:
    """Trial a, finished at step 40 (trials.parquet): one checkpoint holding
    `checkpoint_steps`, and Tune's result.json holding `logged`."""
    _study(Path(paths.storage.root), {"a": "TERMINATED"})
    trial_dir = Path(paths.experiment) / "trial_a"
    (trial_dir / "checkpoint_000001").mkdir(parents=True)
    pq.write_table(_rows("a", checkpoint_steps), trial_dir / "checkpoint_000001" / ROWS_FILE)
    lines = [json.dumps({**_result(s), "config": CONFIG}) for s in logged]
    (trial_dir / "result.json").write_text("\n".join([*lines, '{"step": 50, "trunc']) + "\n")
    return metrics_file(paths.results, "a")


def test_a_truncated_file_is_rebuilt_from_the_source_with_the_most_rows(tmp_path: Path):
    """The trial's newest checkpoint is gone, the one left is two records behind: the rows
    after it come from Tune's result.json. Before: rebuilt from the checkpoint, rows lost."""
    paths = StudyPaths(resolve_storage(str(tmp_path)), "s")
    path = _finished_trial(paths, [0, 10, 20], STEPS)
    Path(path).write_bytes(Path(path).read_bytes()[:-200])
    sources: dict[str, str] = {}
    assert verify_finished(paths, {"a": "trial_a"}, sources) == ([path], [])
    assert sources[path] == "its trial's last checkpoint and Tune's result.json"
    back = pq.read_table(path)
    assert checksum_state(back) == OK and back.column("step").to_pylist() == STEPS
    expected = _rows("a", STEPS).drop_columns(["reported_at"])
    assert content_digest(back.drop_columns(["reported_at"])) == content_digest(expected)
    # the checkpoint's rows exactly, their own reported_at included
    assert content_digest(back.slice(0, 3)) == content_digest(_rows("a", [0, 10, 20]))
    assert verify_finished(paths, {"a": "trial_a"}) == ([], [])  # and now it holds


def test_a_rebuild_short_of_the_last_step_is_named(tmp_path: Path):
    paths = StudyPaths(resolve_storage(str(tmp_path)), "s")
    path = _finished_trial(paths, [0, 10, 20], [])  # result.json holds nothing
    Path(path).write_bytes(b"")
    assert verify_finished(paths, {"a": "trial_a"}) == ([path], [path])  # rewritten, and lost
    assert pq.read_table(path).column("step").to_pylist() == [0, 10, 20]


def test_a_valid_file_is_never_replaced_by_fewer_rows(tmp_path: Path):
    paths = StudyPaths(resolve_storage(str(tmp_path)), "s")
    path = _finished_trial(paths, [0, 10, 20], [])
    before = Path(path).read_bytes()
    assert verify_finished(paths, {"a": "trial_a"}) == ([], [])
    assert Path(path).read_bytes() == before


def test_altered_values_are_rewritten_with_or_without_a_checksum(tmp_path: Path):
    paths = StudyPaths(resolve_storage(str(tmp_path)), "s")
    path = _finished_trial(paths, STEPS, STEPS)
    stored = pq.read_table(path)
    for altered in (_zeroed(stored), _zeroed(_rows("a", STEPS))):  # checksum kept; none at all
        pq.write_table(altered, path)
        assert verify_finished(paths, {"a": "trial_a"}) == ([path], [])
        back = pq.read_table(path)
        assert checksum_state(back) == OK and back.column("test_acc").to_pylist()[-1] == 0.54


def test_an_altered_file_with_no_source_left_is_named_and_set_aside(tmp_path: Path):
    paths = _study(tmp_path, {"a": "TERMINATED"})
    path = metrics_file(paths.results, "a")
    pq.write_table(_zeroed(pq.read_table(path)), path)
    assert verify_finished(paths, {"a": "trial_a"}) == ([], [path])
    assert not Path(path).exists() and (Path(path).parent / ".a.parquet.damaged").exists()


def test_reported_rows_are_the_trials_rows_from_tunes_log(tmp_path: Path):
    paths = StudyPaths(resolve_storage(str(tmp_path)), "s")
    _finished_trial(paths, [0], [0, 10, 10])
    rows = reported_rows(paths.storage.fs, str(Path(paths.experiment) / "trial_a"), "s", "a")
    assert [r["step"] for r in rows] == [0, 10]  # the broken last line skipped
    mine = _row("a", 10)
    assert {k: v for k, v in rows[1].items() if k != "reported_at"} == {
        k: v for k, v in mine.items() if k != "reported_at"
    }
    assert reported_rows(paths.storage.fs, str(tmp_path / "none"), "s", "a") == []
