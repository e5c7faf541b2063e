"""The public Python API (README, "Python API"): run, resume and load a study from Python."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import study
from study.errors import StudyError, StudyInputError, StudyStorageError

# ---------------------------------------------------------------- bad input (fast: no Ray)


def test_an_unknown_space_raises_a_study_error_naming_it_and_writes_nothing(
    storage: Path,
) -> None:
    with pytest.raises(StudyError, match="unknown space 'no_such_space'") as caught:
        study.run_study("no_such_space", storage=str(storage))
    assert isinstance(caught.value, StudyInputError)  # not SystemExit, and the input kind
    assert "\n" not in str(caught.value)  # the CLI's one line
    assert list(storage.iterdir()) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_concurent": 2}, "unknown option 'max_concurent'"),
        ({"max_concurrent": "2"}, "max_concurrent='2': must be an int"),
        ({"max_concurrent": True}, "max_concurrent=True: must be an int"),
        ({"cpus_per_trial": "one"}, "cpus_per_trial='one': must be a number"),
        ({"smoke": "yes"}, "smoke='yes': must be True or False"),
        ({"searcher": "bayes"}, "searcher='bayes': must be one of grid"),
        ({"scheduler": "pbt"}, "scheduler='pbt': must be one of"),
        ({"tracker": "neptune"}, "tracker='neptune': must be one of"),
        ({"set": "lr=0.1"}, "give a dict of trial-config keys"),
        ({"set": {"lr": 0.1}, "overrides": ["lr=0.2"]}, "give set= or overrides=, not both"),
        ({"set": {"no_such_key": 1}}, "unknown config key 'no_such_key'"),
        ({"max_concurrent": 0}, "--max-concurrent 0: must be an int >= 1"),
    ],
)
def test_a_bad_keyword_option_raises_a_study_input_error(
    storage: Path, kwargs: dict, message: str
) -> None:
    with pytest.raises(StudyInputError, match=message.replace("(", r"\(")):
        study.run_study("smoke", storage=str(storage), **kwargs)
    assert list(storage.iterdir()) == []


def test_a_space_of_the_wrong_type_or_a_missing_study_is_refused(storage: Path) -> None:
    with pytest.raises(StudyInputError, match="give a built-in space's name"):
        study.run_study(3, storage=str(storage))  # type: ignore[arg-type]
    with pytest.raises(StudyInputError, match="no study at"):
        study.load_study(storage / "nothing")
    with pytest.raises(StudyError, match=r"no study 'nothing' at .*nothing to resume"):
        study.resume_study("nothing", storage=str(storage))


def test_a_python_space_is_validated_like_a_file(storage: Path) -> None:
    import dataclasses

    import search_spaces

    bad = dataclasses.replace(search_spaces.get("smoke"), grid={"lr": [-1.0]})
    with pytest.raises(StudyInputError, match=r"space 'smoke': grid\.lr"):
        study.run_study(bad, storage=str(storage))
    assert list(storage.iterdir()) == []


def test_the_package_exports_the_api_lazily() -> None:
    assert set(study.__all__) <= set(dir(study)) | set(study._HOME)
    assert study.StudyStorageError is StudyStorageError
    with pytest.raises(AttributeError):
        _ = study.no_such_name


# ---------------------------------------------------------------- a real study (slow: Ray)


@pytest.fixture(scope="module")
def smoke(ray_session: object, tmp_path_factory: pytest.TempPathFactory) -> study.StudyResult:
    storage = tmp_path_factory.mktemp("api") / "studies"
    return study.run_study("smoke", storage=str(storage), out=io.StringIO())


def test_run_study_finishes_the_smoke_study_and_returns_its_results(smoke) -> None:
    assert smoke.exit_code == 0 and smoke.total == 4 and smoke.counts == {"TERMINATED": 4}
    assert Path(smoke.path).is_dir() and smoke.name == "smoke"
    trials, metrics = smoke.trials, smoke.metrics
    assert isinstance(trials, pd.DataFrame) and len(trials) == 4
    assert set(trials["status"]) == {"TERMINATED"}
    assert set(metrics["trial_id"]) == set(trials["trial_id"])
    steps = metrics.groupby("trial_id")["step"].apply(list)
    assert all(s == sorted(s) and len(s) > 1 for s in steps)  # sorted by trial and step
    assert not smoke.phases.empty


def test_load_study_returns_the_same_trials_and_rows(smoke) -> None:
    loaded = study.load_study(smoke.path)
    assert (loaded.name, loaded.total, loaded.counts, loaded.exit_code) == (
        smoke.name, smoke.total, smoke.counts, 0,
    )  # fmt: skip
    pd.testing.assert_frame_equal(loaded.trials, smoke.trials)
    pd.testing.assert_frame_equal(loaded.metrics, smoke.metrics)
    assert loaded.spec == smoke.spec


def test_the_study_stores_its_builtin_space_definition(smoke) -> None:
    saved = json.loads((Path(smoke.path) / "study.json").read_text())
    assert saved["space_source"] == "builtin"
    assert saved["space_definition"]["grid"] and saved["space_definition"]["name"] == "smoke"


@pytest.mark.slow
def test_load_study_imports_neither_ray_nor_torch(smoke) -> None:
    code = (
        "import sys, study\n"
        f"r = study.load_study({smoke.path!r})\n"
        "assert len(r.trials) == 4 and len(r.metrics) > 4, r\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'torch')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_resume_study_of_a_finished_study_keeps_its_trials(smoke) -> None:
    resumed = study.resume_study(smoke.name, storage=smoke.storage, out=io.StringIO())
    assert resumed.exit_code == 0 and resumed.counts == {"TERMINATED": 4}
    pd.testing.assert_frame_equal(resumed.metrics, smoke.metrics)


@pytest.mark.parametrize(
    ("given", "storage", "name"),
    [
        ("studies/k_sweep/", "studies", "k_sweep"),
        ("k_sweep", ".", "k_sweep"),
        ("/k_sweep", "/", "k_sweep"),
        (
            "s3://b/studies/x?endpoint_override=h:9000&scheme=http",
            "s3://b/studies?endpoint_override=h:9000&scheme=http",
            "x",
        ),
    ],
)
def test_a_study_folder_splits_into_storage_and_name(given: str, storage: str, name: str) -> None:
    from study.api import split_study_path

    assert split_study_path(given) == (storage, name)


def test_the_cli_goes_the_apis_path(monkeypatch: pytest.MonkeyPatch, storage: Path) -> None:
    """`python -m study.run` parses argv into the options `run_study` builds from keywords,
    and hands them to the same function."""
    import types

    import study.api

    seen = []

    def execute(options, callbacks=(), out=None):
        seen.append(options)
        return types.SimpleNamespace(exit_code=7, paths=None)

    monkeypatch.setattr(study.api, "execute", execute)
    from study.run import main

    argv = ["--space", "smoke", "--storage", str(storage), "--max-concurrent", "2", "--smoke"]
    assert main([*argv, "--set", "lr=0.1", "--resume-if-exists"]) == 7
    with pytest.raises(AttributeError):  # the stub's result is no Outcome: the call reached it
        study.run_study(
            "smoke", storage=str(storage), max_concurrent=2, smoke=True, set={"lr": 0.1},
            resume_if_exists=True,
        )  # fmt: skip
    assert len(seen) == 2 and seen[0] == seen[1]
