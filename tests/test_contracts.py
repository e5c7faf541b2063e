"""Contracts between the packages: the science's records, the service's results layout and the
reader agree, and the imports run one way (`study` → `trainables`; `reports` imports none).

The layout is defined once, in `study.results`; `reports` reads it from the files. These tests
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
from study.results import LAYOUT_KEY, METRICS_SCHEMA, TRIALS_SCHEMA, Role, Status, roles
from tests.oracles import tiny_config

REPO = Path(__file__).resolve().parent.parent


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


def test_the_reader_knows_the_writers_statuses_and_roles():
    from reports import _schema

    assert [s.value for s in _schema.Status] == [s.value for s in Status]
    assert set(_schema.KNOWN_ROLES) == {r.value for r in Role}
    assert (_schema.ROLE_KEY, _schema.LAYOUT_KEY) == (b"role", LAYOUT_KEY)
    for schema in (METRICS_SCHEMA, TRIALS_SCHEMA):
        assert all(roles(schema).values())  # every field states its role


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
        assert pq.read_schema(file).metadata[LAYOUT_KEY] == b"1"
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
    from study.writer import trial_status

    assert trial_status(_fake_trial(tmp_path, last)) == expected


def test_a_stopped_trial_keeps_the_rows_it_reported_after_its_last_checkpoint(tmp_path: Path):
    from study.writer import TrialsWriter

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
    ray_internals.check_ray_version(version)


@pytest.mark.parametrize("version", ["2.49.1", "2.61.0", "3.0.0", ""])
def test_an_untested_ray_version_is_refused_before_ray_is_used(
    version: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys
):
    with pytest.raises(StudyError, match=r"ray\[tune\]>=2\.50,<2\.61"):
        ray_internals.check_ray_version(version)
    from study.run import main

    monkeypatch.setattr(ray_internals, "installed_ray_version", lambda: version)
    storage = tmp_path / "studies"
    assert main(["--space", "smoke", "--storage", str(storage)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: Ray") and not storage.exists()
