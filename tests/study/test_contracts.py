"""Contracts between the packages: the science's records, the service's results layout and the
reader agree, and the imports run one way (`study` → `trainables`; `reports` imports none).

The layout is defined once, in `study.store.layout`; `reports` reads it from the files. These tests
hold the three to each other instead of to a second list.
"""

from __future__ import annotations

import ast
import io
import types
from pathlib import Path

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from study import ray_internals
from study.errors import StudyError
from study.execute.cluster import check_ray_version
from study.store.layout import (
    LAYOUT_KEY,
    LAYOUT_VERSION,
    METRICS_SCHEMA,
    PHASES_SCHEMA,
    TABLE_KEY,
    TRIALS_SCHEMA,
    Role,
    Status,
    roles,
)
from tests.oracles import tiny_config

REPO = Path(__file__).resolve().parents[2]


# ---- imports run one way (read from the source, never by importing) ------------------------
def _imported_roots(package: str) -> dict[str, set[str]]:
    """file → the top-level packages it imports (absolute imports; relative ones stay inside)."""
    out = {}
    for file in sorted((REPO / package).rglob("*.py")):
        roots = set()
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            if isinstance(node, ast.Import):
                roots |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                roots.add(node.module.split(".")[0])
        out[str(file.relative_to(REPO))] = roots
    return out


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [("trainables", {"study", "ray"}), ("reports", {"ray", "torch", "trainables", "study"})],
)
def test_imports_run_one_way(package: str, forbidden: set[str]):
    found = {f: sorted(roots & forbidden) for f, roots in _imported_roots(package).items()}
    assert found, f"no source files under {package}/"
    assert {f: bad for f, bad in found.items() if bad} == {}


# ---- the science's record and the layout ---------------------------------------------------
def test_a_real_record_has_exactly_the_schemas_metric_and_measure_fields():
    from trainables import run

    records = list(run(tiny_config(total_steps=20, eval_every=10)))
    layout = {n for n, r in roles(METRICS_SCHEMA).items() if r in (Role.METRIC, Role.MEASURE)}
    assert len(records) == 3
    for record in records:
        assert set(record) == layout


def test_a_real_phase_row_has_exactly_the_phases_schemas_metric_and_measure_fields():
    from trainables import Trial

    trial = Trial(tiny_config(total_steps=20, eval_every=10, k=5))
    list(trial.records())
    rows = trial.take_phase_rows()
    layout = {n for n, r in roles(PHASES_SCHEMA).items() if r in (Role.METRIC, Role.MEASURE)}
    assert [r["step"] for r in rows] == [0, 10]  # the initial point, then one per window of 10
    for row in rows:
        assert set(row) == layout
    assert PHASES_SCHEMA.metadata[TABLE_KEY] == b"phases"
    assert {roles(PHASES_SCHEMA)[n] for n in ("step", "feature_updates")} == {Role.METRIC}
    # a phase row belongs to a trial and a config as a metrics row does
    metrics_rest = [
        n for n, r in roles(METRICS_SCHEMA).items() if r not in (Role.METRIC, Role.MEASURE)
    ]
    assert [
        n for n, r in roles(PHASES_SCHEMA).items() if r not in (Role.METRIC, Role.MEASURE)
    ] == metrics_rest


def test_the_reader_knows_the_writers_statuses_and_roles():
    from reports import _schema

    assert [s.value for s in _schema.Status] == [s.value for s in Status]
    assert set(_schema.KNOWN_ROLES) == {r.value for r in Role}
    assert (_schema.ROLE_KEY, _schema.LAYOUT_KEY) == (b"role", LAYOUT_KEY)
    for schema in (METRICS_SCHEMA, PHASES_SCHEMA, TRIALS_SCHEMA):
        assert all(roles(schema).values())  # every field states its role
        assert schema.metadata[LAYOUT_KEY] == LAYOUT_VERSION.encode()


# ---- a real study, read back ---------------------------------------------------------------
@pytest.fixture(scope="module")
def smoke_results(ray_session: object, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from study.service import StudyOptions, run_study

    storage = tmp_path_factory.mktemp("contracts") / "studies"
    out = io.StringIO()
    outcome = run_study(StudyOptions(space="smoke", storage=str(storage)), out=out)
    assert outcome.exit_code == 0, out.getvalue()
    return storage / "smoke" / "results"


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_reports_reads_every_role_of_a_real_study(smoke_results: Path):
    import reports
    from reports._load import read_studies
    from reports._schema import roles_of

    files = sorted((smoke_results / "metrics").glob("*.parquet"))
    assert files
    for file in [*files, smoke_results / "trials.parquet"]:
        assert pq.read_schema(file).metadata[LAYOUT_KEY] == LAYOUT_VERSION.encode()
    data = read_studies(smoke_results.parent)
    written = {**roles(METRICS_SCHEMA), **roles(TRIALS_SCHEMA)}
    for frame in (data.metrics, data.trials):
        read = roles_of(frame)
        layout = [c for c in frame.columns if c in written]
        assert layout and {c: read.get(c) for c in layout} == {c: written[c] for c in layout}
    assert set(data.metrics.columns) == set(METRICS_SCHEMA.names)
    assert set(TRIALS_SCHEMA.names) <= set(data.trials.columns)
    assert set(data.trials["status"]) == {Status.TERMINATED}
    assert reports.load_trials(smoke_results.parent)["usable"].all()


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_every_trial_of_a_real_study_writes_its_phases(smoke_results: Path):
    """Through the real adapter: one file per trial beside its metrics file, the layout's
    schema, rows unique per step from the initial point on, lin_gap at every update."""
    import pandas as pd

    metrics = sorted(p.name for p in (smoke_results / "metrics").glob("*.parquet"))
    phases_dir = smoke_results / "phases"
    assert sorted(p.name for p in phases_dir.glob("*.parquet")) == metrics
    assert not list(phases_dir.glob(".*"))  # no temporary files left behind
    for file in phases_dir.glob("*.parquet"):
        schema = pq.read_schema(file)
        assert schema.names == PHASES_SCHEMA.names and roles(schema) == roles(PHASES_SCHEMA)
        assert schema.metadata[TABLE_KEY] == b"phases"
    phases = pd.read_parquet(phases_dir)
    assert not phases.duplicated(["trial_id", "step"]).any()
    assert (phases.groupby("trial_id")["step"].min() == 0).all()
    assert phases["sharpness"].gt(0).all() and phases["lr_sharpness"].notna().all()
    updates = phases[phases["feature_updates"] > 0]
    assert updates["lin_gap"].notna().all()
    assert sorted(updates["k"].unique()) == [1.0, 4.0, 16.0]  # K=∞ has the initial point only
    assert (phases[phases["k"] == float("inf")]["step"] == 0).all()
    recorded = pd.read_parquet(smoke_results / "metrics")
    assert recorded["sharpness"].notna().all() and (recorded["val_examples"] > 0).all()


def test_resume_rewrites_a_finished_trials_phases_from_its_checkpoint_and_skips_older_ones(
    tmp_path: Path,
):
    """verify_finished: a missing phases file comes back from the checkpoint; a checkpoint made
    before the phases table (no phases.parquet) leaves none and is no error."""
    from study.execute.resume import verify_finished
    from study.execute.trainable import PHASES_FILE, ROWS_FILE
    from study.store.fs import StudyPaths, resolve_storage
    from study.store.layout import (
        METRICS_SCHEMA,
        config_columns,
        metric_columns,
        metrics_file,
        phase_columns,
        phases_file,
        table,
    )
    from trainables import Trial

    paths = StudyPaths(resolve_storage(str(tmp_path)), "s")
    trial = Trial(tiny_config(k=5))
    fixed = {"study": "s", **config_columns(trial.cfg)}
    rows, phase_rows = [], []
    for record in trial.records():
        rows.append({**fixed, "trial_id": "a", **metric_columns(record)})
        phase_rows += [
            {**fixed, "trial_id": "a", **phase_columns(p)} for p in trial.take_phase_rows()
        ]
    for trial_id, with_phases in (("a", True), ("old", False)):
        checkpoint = Path(paths.experiment) / f"trial_{trial_id}" / "checkpoint_000000"
        checkpoint.mkdir(parents=True)
        mine = [{**r, "trial_id": trial_id} for r in rows]
        pq.write_table(table(mine, METRICS_SCHEMA), checkpoint / ROWS_FILE)
        if with_phases:
            pq.write_table(table(phase_rows, PHASES_SCHEMA), checkpoint / PHASES_FILE)
    # the old trial's file, as an ilstudy before the new columns wrote it: matches its checkpoint
    old = pq.read_table(Path(paths.experiment) / "trial_old" / "checkpoint_000000" / ROWS_FILE)
    old = old.drop_columns(["sharpness", "lin_gap", "peak_loss_ratio", "val_examples"])
    old = old.replace_schema_metadata({**old.schema.metadata, LAYOUT_KEY: b"1"})
    pq.write_table(old, Path(paths.experiment) / "trial_old" / "checkpoint_000000" / ROWS_FILE)
    Path(metrics_file(paths.results, "old")).parent.mkdir(parents=True)
    pq.write_table(old, metrics_file(paths.results, "old"))
    old_bytes = Path(metrics_file(paths.results, "old")).read_bytes()
    rewritten, lost = verify_finished(paths, {"a": "trial_a", "old": "trial_old"})
    phases_a = phases_file(paths.results, "a")
    assert lost == [] and rewritten == [phases_a, metrics_file(paths.results, "a")]
    assert not Path(phases_file(paths.results, "old")).exists()
    assert Path(metrics_file(paths.results, "old")).read_bytes() == old_bytes  # left as it was
    # a damaged old file comes back in its own layout, not today's
    Path(metrics_file(paths.results, "old")).write_bytes(b"not parquet")
    assert verify_finished(paths, {"old": "trial_old"})[0] == [metrics_file(paths.results, "old")]
    back_old = pq.read_table(metrics_file(paths.results, "old"))
    assert back_old.schema == old.schema and back_old.schema.metadata[LAYOUT_KEY] == b"1"
    assert back_old.to_pandas().equals(old.to_pandas())
    back = pq.read_table(phases_a)
    assert back.schema == PHASES_SCHEMA and back.column("step").to_pylist() == [0, 10, 20]
    assert verify_finished(paths, {"a": "trial_a", "old": "trial_old"}) == ([], [])


# ---- statuses the writer derives ----------------------------------------------------------
def _fake_trial(tmp_path: Path, last: dict, status: str = "TERMINATED") -> types.SimpleNamespace:
    """What the writer reads of a Tune trial: status, config, last result and storage."""
    storage = types.SimpleNamespace(
        storage_filesystem=pafs.LocalFileSystem(),
        experiment_fs_path=str(tmp_path / "study"),
        trial_dir_name="ilstudy_trial_a",
    )
    return types.SimpleNamespace(
        trial_id="a", status=status, last_result=last, storage=storage, get_error=lambda: None,
        config={**tiny_config(), "total_steps": 30, "eval_every": 10},
    )  # fmt: skip


@pytest.mark.parametrize(
    ("last", "expected"),
    [
        ({"step": 30, "diverged": False, "done": True}, Status.TERMINATED),
        ({"step": 10, "diverged": False, "done": True}, Status.STOPPED),  # the scheduler's
        ({"step": 10, "diverged": False, "done": False}, Status.PENDING),  # an interrupt
        ({"step": 10, "diverged": True, "done": True}, Status.DIVERGED),
    ],
)
def test_a_trial_tune_ended_before_total_steps_is_stopped(tmp_path: Path, last, expected):
    from study.execute.writer import trial_status

    assert trial_status(_fake_trial(tmp_path, last)) == expected


def test_a_stopped_trial_keeps_the_rows_it_reported_after_its_last_checkpoint(tmp_path: Path):
    from study.execute.writer import TrialsWriter

    writer = TrialsWriter("study")
    trial = _fake_trial(tmp_path, {}, status="RUNNING")
    for step in (0, 10):
        result = {"step": step, "feature_updates": 0, "test_acc": 0.5, "diverged": False}
        writer.on_trial_result(0, [trial], trial, result)
        trial.last_result = dict(result, done=False)
    trial.last_result["done"] = True  # Tune marks the result a scheduler stops the trial at
    writer.on_trial_complete(0, [trial], trial)  # called while Tune still says RUNNING
    trial.status = "TERMINATED"
    writer.on_experiment_end([trial])
    results = tmp_path / "study" / "results"
    rows = pq.read_table(results / "metrics" / "a.parquet").to_pylist()
    assert [r["step"] for r in rows] == [0, 10] and rows[0]["study"] == "study"
    trials = pq.read_table(results / "trials.parquet").to_pylist()
    assert [(t["status"], t["step"]) for t in trials] == [("STOPPED", 10)]
    assert trials[0]["finished_at"] is not None


# ---- the tested Ray versions ---------------------------------------------------------------
@pytest.mark.parametrize("version", ["2.50.0", "2.60.0", "2.60.3rc1"])
def test_tested_ray_versions_pass(version: str):
    assert ray_internals.ray_version_problem(version) is None


@pytest.mark.parametrize("version", ["2.49.1", "2.61.0", "3.0.0", ""])
def test_an_untested_ray_version_is_refused_before_ray_is_used(
    version: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys
):
    assert "ray[tune]>=2.50,<2.61" in (ray_internals.ray_version_problem(version) or "")
    monkeypatch.setattr(ray_internals, "installed_ray_version", lambda: version)
    with pytest.raises(StudyError, match=r"ray\[tune\]>=2\.50,<2\.61"):
        check_ray_version()
    from study.run import main

    storage = tmp_path / "studies"
    assert main(["--space", "smoke", "--storage", str(storage)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: Ray") and not storage.exists()
