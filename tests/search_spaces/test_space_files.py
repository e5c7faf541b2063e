"""`--space path.toml`: a user's space, validated like a built-in, kept by the study for resume."""

from __future__ import annotations

import io
import json
import math
import pickle
import shutil
from pathlib import Path

import pandas as pd
import pytest

from search_spaces import Choice, LogUniform, Uniform, from_file
from study.errors import StudyError
from study.listing import list_spaces
from study.plan import build_plan, get_space
from study.run import main
from study.service import EXIT_INTERRUPTED, StudyOptions, new_spec, run_study
from study.spec import StudySpec
from study.status import status
from tests.test_reliability_concurrency import Interrupt

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "lr_per_k.toml"


def _write(tmp_path: Path, text: str, name: str = "mine.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _refused(argv: list[str], capsys: pytest.CaptureFixture[str], storage: Path) -> str:
    before = sorted(storage.rglob("*"))
    assert main([*argv, "--storage", str(storage)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err
    assert sorted(storage.rglob("*")) == before
    return err


def test_the_readme_example_is_the_space_it_says() -> None:
    space = get_space(str(EXAMPLE))
    assert space.name == "lr_per_k" and space.metric == "val_acc" and space.mode == "max"
    assert space.grid == {"k": [1, 10, 100, "inf"], "lr": [0.02, 0.05, 0.1], "seed": [0, 1, 2]}
    assert space.fixed["total_steps"] == 1000
    spec = new_spec(StudyOptions(space=str(EXAMPLE)))
    assert spec.space == "lr_per_k" and spec.space_definition == from_file.definition(space)
    assert build_plan(spec).total_trials == 36
    smoke = build_plan(new_spec(StudyOptions(space=str(EXAMPLE), smoke=True)))
    assert smoke.total_trials == 4 and smoke.space.fixed["total_steps"] == 30


def test_distributions_and_defaults(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        'searcher = "optuna"\nnum_samples = 6\nmetric = "val_loss"\n'
        "[distributions]\nlr = { log_uniform = [1e-3, 0.5] }\n"
        "momentum = { uniform = [0, 0.9] }\nk = { choice = [1, 10, inf] }\n",
    )
    space = from_file.load(path)
    assert space.name == "mine" and space.mode == "min"  # a loss is minimised by default
    assert space.distributions == {
        "lr": LogUniform(1e-3, 0.5), "momentum": Uniform(0.0, 0.9), "k": Choice((1, 10, "inf")),
    }  # fmt: skip
    # a file that names no metric ranks on validation (an empty file is refused: it defines
    # no trials, test_reliability_input.py)
    assert from_file.load(_write(tmp_path, "[fixed]\nk = 1\n", "bare.toml")).metric == "val_acc"
    plan = build_plan(new_spec(StudyOptions(space=str(path))))
    assert plan.searcher == "optuna" and plan.total_trials == 6


def test_a_reference_arm_from_a_file_runs_once_per_seed_and_survives_the_stored_copy(
    tmp_path: Path,
) -> None:
    path = _write(
        tmp_path,
        "[fixed]\ntotal_steps = 100\n[grid]\nk = [1, inf]\nlr = [0.05, 0.1]\nseed = [0, 1, 2]\n"
        '[[references]]\ntrainer = "plain"\noptimizer = "adam"\nlr = 1e-3\nk = 1\n',
    )
    space = from_file.load(path)
    assert space.references == ({"trainer": "plain", "optimizer": "adam", "lr": 1e-3, "k": 1},)
    assert build_plan(new_spec(StudyOptions(space=str(path)))).total_trials == 12 + 3
    stored = json.loads(json.dumps(from_file.definition(space)))
    assert from_file.from_definition(stored, "stored") == space


def test_the_stored_copy_is_the_same_space_after_json() -> None:
    space = from_file.load(EXAMPLE)
    stored = json.loads(json.dumps(from_file.definition(space)))
    assert from_file.from_definition(stored, "stored") == space
    assert get_space("lr_per_k", stored) == space


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("bogus = 1", "bogus: unknown field; allowed: name"),
        ("[fixed]\nlrr = 0.1", "fixed.lrr: not a trial-config key"),
        ('[fixed]\ntrainer = "sgd"', "fixed.trainer: trainer=sgd: must be one of linearised"),
        ("[grid]\nlr = [0.1, -1]", "grid.lr[1]: lr=-1.0: must be a finite number >= 0"),
        ("[grid]\nlr = 0.1", "grid.lr: must be a non-empty list"),
        ("[grid]\nk = []", "grid.k: must be a non-empty list"),
        ("[grid]\nk = [0]", "grid.k[0]: k=0: must be an int >= 1 or 'inf'"),
        ("[distributions]\nlr = { log_uniform = [0, 1] }", "low must be > 0 on a log scale"),
        ("[distributions]\nlr = { uniform = [1, 0.1] }", "low must be < high"),
        ("[distributions]\nlr = { normal = [0, 1] }", "distributions.lr: must be one of"),
        ("[distributions]\ntotal_steps = { uniform = [1, 9] }", "total_steps is not one"),
        ("[distributions]\nlr = { log_uniform = [1e-3, 1] }", "searcher: grid cannot draw"),
        ('metric = "accuracy"', "metric: 'accuracy' is not a reported metric"),
        ('metric = "val_acc"\n[fixed]\nval_size = 0', "val_acc needs a validation split"),
        ('mode = "best"', "mode: 'best': must be max or min"),
        ('searcher = "bayes"', "searcher: 'bayes': must be one of grid"),
        ("num_samples = 0", "num_samples: 0: must be an int >= 1"),
        ('name = "a/b"', "name: must be 1-100 letters"),
        ("[fixed]\nlr = 0.1\n[grid]\nlr = [0.2]", "grid.lr: is also in [fixed]"),
        ('[fixed]\noptimizer = "adam"\n[grid]\nmomentum = [0.9]', "applies to sgd only"),
        ("[smoke]\ntotal_steps = -5", "smoke.total_steps: total_steps=-5"),
        ("[grid\nk = 1", "not valid TOML"),
        ("references = 1", "references: must be an array of tables"),
        ("[[references]]\nlrr = 1", "references[0].lrr: not a trial-config key"),
        ('[[references]]\noptimizer = "bfgs"', "references[0].optimizer: optimizer=bfgs"),
        ('searcher = "random"\n[[references]]\nlr = 1e-3', "reference arms ride on the grid"),
    ],
)
def test_a_bad_file_is_one_line_naming_file_key_and_reason(
    text: str, expected: str, tmp_path: Path, storage: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, text)
    err = _refused(["--space", str(path), "--smoke"], capsys, storage)
    assert f"space file {path}" in err and expected in err, err


def test_a_missing_file_and_a_duplicate_point_are_refused(
    tmp_path: Path, storage: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _refused(["--space", str(tmp_path / "none.toml")], capsys, storage)
    assert "none.toml: cannot be read" in err
    dup = _write(tmp_path, "[fixed]\ntotal_steps = 100\n[grid]\nk = [1, 100, inf]", "dup.toml")
    err = _refused(["--space", str(dup)], capsys, storage)
    assert f"space file {dup}: k=100 and k=inf are the same trial" in err
    both = _write(tmp_path, '[grid]\noptimizer = ["sgd", "adam"]\nmomentum = [0, 0.9]', "b.toml")
    err = _refused(["--space", str(both)], capsys, storage)
    assert f"space file {both}: at optimizer=adam, momentum=0.9: momentum=0.9: applies" in err


def test_list_shows_the_builtin_spaces_only() -> None:
    listing = list_spaces(cpus=2)
    assert "smoke" in listing and "lr_per_k" not in listing


def _fake_study(storage: Path, definition: dict | None, space: str = "mine") -> None:
    """A study folder that passes the resume checks up to the option comparison."""
    study = storage / "s"
    study.mkdir()
    spec = StudySpec(space=space, searcher="grid", num_samples=1, data_dir="/tmp/data",
                     space_definition=definition)  # fmt: skip
    (study / "study.json").write_text(json.dumps(spec.to_json()))
    (study / "tuner.pkl").write_bytes(pickle.dumps({}))
    (study / "experiment_state-2026-01-01_00-00-00.json").write_text(
        json.dumps({"trial_data": [["{}", "{}"]], "runner_data": {}})
    )


def test_a_resume_checks_a_repeated_file_against_the_stored_space(
    tmp_path: Path, storage: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    original = _write(tmp_path, "[fixed]\ntotal_steps = 30\n[grid]\nlr = [0.05, 0.1]\n")
    _fake_study(storage, from_file.definition(from_file.load(original)))
    changed = _write(tmp_path, "[fixed]\ntotal_steps = 30\n[grid]\nlr = [0.05, 0.2]\n", "b.toml")
    err = _refused(["--resume", "--name", "s", "--space", str(changed)], capsys, storage)
    assert "differs from the space study 's' was created with (in grid.lr)" in err
    err = _refused(["--resume", "--name", "s", "--space", "smoke"], capsys, storage)
    assert "created from a space file (space 'mine'), not the built-in space 'smoke'" in err
    # The same space under another file name and place is the same study.
    moved = tmp_path / "elsewhere" / "renamed.toml"
    moved.parent.mkdir()
    shutil.copy(original, moved)
    spec = StudySpec.from_json(json.loads((storage / "s" / "study.json").read_text()), "s")
    from study.spec import check_same

    check_same(spec, {"space": str(moved)}, "s")
    with pytest.raises(StudyError, match="differs"):
        check_same(spec, {"space": str(changed)}, "s")


def test_a_builtin_study_refuses_a_space_file_on_resume(
    tmp_path: Path, storage: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _fake_study(storage, None, space="smoke")
    path = _write(tmp_path, "[grid]\nk = [1, 4]\n", "smoke.toml")
    err = _refused(["--resume", "--name", "s", "--space", str(path)], capsys, storage)
    assert "created with the built-in space 'smoke', not the space file" in err


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_a_file_space_study_is_interrupted_and_resumed_after_the_file_changed_and_moved(
    ray_session: object, tmp_path: Path, storage: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "lr_k.toml"
    shutil.copy(EXAMPLE, path)
    options = StudyOptions(space=str(path), smoke=True, storage=str(storage))
    first = run_study(options, callbacks=[Interrupt(tmp_path / "interrupted")], out=io.StringIO())
    assert first.exit_code == EXIT_INTERRUPTED
    saved = json.loads((storage / "lr_k" / "study.json").read_text())
    assert saved["space"] == "lr_k" and saved["space_definition"]["grid"]["lr"] == [0.02, 0.05, 0.1]

    # The file is edited, then moved away: the resume runs the study's own copy.
    path.write_text(path.read_text().replace("lr = [0.05, 0.1]", "lr = [0.5, 1.0]"))
    err = _refused(["--resume", "--name", "lr_k", "--space", str(path)], capsys, storage)
    assert "(in smoke.lr)" in err
    path.unlink()
    resumed = run_study(StudyOptions(name="lr_k", resume=True, storage=str(storage)),
                        out=io.StringIO())  # fmt: skip
    assert resumed.exit_code == 0 and resumed.counts == {"TERMINATED": 4}

    rows = pd.read_parquet(storage / "lr_k" / "results" / "metrics")
    assert sorted(set(zip(rows["k"], rows["lr"], strict=True))) == [
        (1.0, 0.05), (1.0, 0.1), (math.inf, 0.05), (math.inf, 0.1),
    ]  # fmt: skip
    assert not rows.duplicated(["trial_id", "step"]).any()
    assert sorted(rows.groupby("trial_id")["step"].max()) == [30] * 4
    # The status view ranks on the file's metric, a validation one.
    view = status("lr_k", str(storage))
    last = rows.sort_values("step").groupby("trial_id").tail(1)
    best = last.loc[last["val_acc"].idxmax()]
    assert view["best"]["metric"] == "val_acc" and not view["best"]["test_metric"]
    assert view["best"]["trial_id"] == best["trial_id"] and view["space_from_file"]
    assert view["trials"]["finished"] == 4 and view["steps"] == {
        "done": 120, "total": 120, "ended_early": 0,
    }  # fmt: skip
