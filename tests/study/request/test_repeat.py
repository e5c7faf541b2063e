"""The main command is safe to repeat (README, "Running a study"): the same command on its
finished study reports it and runs nothing; on an unfinished one it is refused unless
`--resume-if-exists`, which continues it; another definition under the same name is refused
naming what differs; a held lock still names its holder; old studies still resume."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import pickle
import signal
import socket
from pathlib import Path
from typing import Any

import pytest
from ray import tune

import search_spaces
from study.errors import StudyInputError
from study.request.options import StudyOptions, new_spec
from study.request.space import definition
from study.request.spec import StudySpec, check_same, definition_differences
from study.run import main
from study.store import lock

REPEAT = ["--space", "smoke", "--resume-if-exists"]


def _tree(path: Path) -> dict[str, tuple[int, int]]:
    """Every file below `path` with its size and mtime: to prove nothing was touched."""
    return {
        str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


# ---------------------------------------------------------------- the comparison (fast)


def test_a_builtin_space_is_stored_whole_and_compared_by_definition() -> None:
    spec = new_spec(StudyOptions(space="smoke"))
    assert spec.source == "builtin" and spec.space_definition == definition(
        search_spaces.get("smoke")
    )
    assert definition_differences(spec, new_spec(StudyOptions(space="smoke"))) == []
    other = new_spec(StudyOptions(space="smoke", smoke=True, num_samples=2, overrides=["lr=0.3"]))
    assert definition_differences(spec, other) == [
        "--num-samples: 1 -> 2",
        "--smoke: False -> True",
        "--set: (none) -> lr=0.3",
    ]
    # The built-in edited since the study was made: named key by key.
    edited = dict(spec.space_definition, fixed={**spec.space_definition["fixed"], "lr": 0.7})
    saved = dataclasses.replace(spec, space_definition=edited)
    changed = definition_differences(saved, spec)
    assert len(changed) == 1 and changed[0].startswith("space fixed.lr: 0.7 -> "), changed
    with pytest.raises(StudyInputError, match=r"space 'smoke' differs .* \(in fixed\.lr\)"):
        check_same(saved, {"space": "smoke"}, "smoke")


def test_an_older_builtin_study_without_a_stored_definition_is_still_the_same_study() -> None:
    old = dataclasses.replace(
        new_spec(StudyOptions(space="smoke")), space_definition=None, space_source=""
    )
    payload = {k: v for k, v in old.to_json().items() if k != "space_source"}
    old = StudySpec.from_json(payload, "study.json")
    assert old.source == "builtin"
    assert definition_differences(old, new_spec(StudyOptions(space="smoke"))) == []
    check_same(old, {"space": "smoke"}, "smoke")
    with pytest.raises(StudyInputError, match="was created with --space smoke, not k_sweep"):
        check_same(old, {"space": "k_sweep"}, "smoke")


def _fake_study(storage: Path, spec: StudySpec) -> Path:
    """A study folder that passes the resume checks up to the option comparison."""
    experiment = storage / "smoke"
    experiment.mkdir(parents=True)
    (experiment / "study.json").write_text(json.dumps(spec.to_json()))
    (experiment / "tuner.pkl").write_bytes(pickle.dumps({}))
    (experiment / "experiment_state-2026-01-01_00-00-00.json").write_text(
        json.dumps({"trial_data": [["{}", "{}"]], "runner_data": {}})
    )
    return experiment


def test_the_same_name_with_another_definition_exits_2_naming_it_untouched(
    storage: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = new_spec(StudyOptions(space="smoke"))
    edited = dict(spec.space_definition, grid={"lr": [0.01]})
    _fake_study(storage, dataclasses.replace(spec, space_definition=edited))
    before = _tree(storage)
    assert main([*REPEAT, "--storage", str(storage)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already exists" in err[0] and "another definition" in err[0], err
    assert "space grid.lr: [0.01] -> " in err[0], err
    assert _tree(storage) == before


# ---------------------------------------------------------------- end to end (slow: Ray)


class Interrupt(tune.Callback):
    """Ctrl+C at the first result (Tune stops gracefully), once: a file says it happened, as
    Tune pickles the callback with the experiment and a resume restores it."""

    def __init__(self, flag: Path) -> None:
        self.flag, self.pid = str(flag), os.getpid()

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info):
        if os.getpid() == self.pid and not os.path.exists(self.flag):
            Path(self.flag).touch()
            os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_the_main_command_twice_runs_the_study_once(
    ray_session: object, storage: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [*REPEAT, "--storage", str(storage)]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert "starting study 'smoke'" in first and "4/4 trials finished" in first
    experiment = storage / "smoke"
    before = _tree(experiment)

    assert main(argv) == 0  # the second runs no trial: every file as it was
    second = capsys.readouterr().out
    assert "already ran to its end" in second and "4/4 trials finished" in second
    assert "starting" not in second and "resuming" not in second
    assert f"report:  python -m reports {experiment}" in second
    assert _tree(experiment) == before

    # Without --resume-if-exists the same command reports the finished study too.
    assert main(["--space", "smoke", "--storage", str(storage)]) == 0
    assert "already ran to its end" in capsys.readouterr().out

    # Another definition under the name: exit 2 naming it, nothing touched.
    assert main([*argv, "--set", "lr=0.3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--set: (none) -> lr=0.3" in err[0], err
    assert _tree(experiment) == before

    # A lock held from another host still exits 2 naming its holder.
    holder = {**lock.this_holder("python -m study.run elsewhere"), "host": "elsewhere"}
    assert holder["host"] != socket.gethostname()
    (experiment / lock.LOCK_FILE).write_text(json.dumps(holder))
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "locked by" in err[0] and "on elsewhere" in err[0], err
    (experiment / lock.LOCK_FILE).unlink()

    # A study made before built-ins were stored (space_definition null) is still the same
    # study: reported, and resumed.
    spec_file = experiment / "study.json"
    saved = json.loads(spec_file.read_text())
    saved["space_definition"] = None
    saved.pop("space_source")
    spec_file.write_text(json.dumps(saved))
    assert main(argv) == 0
    assert "already ran to its end" in capsys.readouterr().out
    assert main(["--resume", "--name", "smoke", "--storage", str(storage)]) == 0


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_an_unfinished_study_is_continued_only_with_resume_if_exists(
    ray_session: object, storage: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from study.service import run_study

    options = StudyOptions(space="smoke", storage=str(storage))
    first = run_study(options, callbacks=[Interrupt(tmp_path / "interrupted")], out=io.StringIO())
    assert first.exit_code == 130

    assert main(["--space", "smoke", "--storage", str(storage)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is unfinished" in err[0] and "--resume-if-exists" in err[0], err

    assert main([*REPEAT, "--storage", str(storage)]) == 0
    out = capsys.readouterr().out
    assert "resuming study 'smoke'" in out and "4/4 trials finished" in out


def test_a_folder_without_a_study_in_it_is_refused_as_before(
    storage: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A folder with no study.json (a driver starting, or one that stopped before it wrote
    it) is no study to compare with: refused as a taken name, not as an unreadable study."""
    (storage / "smoke").mkdir()
    (storage / "smoke" / "notes.txt").write_text("mine")
    before = _tree(storage)
    assert main([*REPEAT, "--storage", str(storage)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already exists" in err[0] and "another --name" in err[0], err
    assert _tree(storage) == before


def test_a_python_space_is_stored_whole_and_compared_by_definition(storage: Path) -> None:
    from study.request.options import read_request

    space = dataclasses.replace(search_spaces.get("smoke"), name="mine", grid={"lr": [0.1, 0.2]})
    request = read_request(StudyOptions(space=space, storage=str(storage)))
    spec = request.spec
    assert request.paths.name == "mine" and not request.resume
    assert spec.source == "python" and spec.space_definition == definition(space)
    moved = dataclasses.replace(space, grid={"lr": [0.1, 0.3]})
    changed = definition_differences(spec, new_spec(StudyOptions(space=moved)))
    assert changed == ["space grid.lr: [0.1, 0.2] -> [0.1, 0.3]"]
    with pytest.raises(StudyInputError, match=r"differs .* \(in grid\.lr\)"):
        check_same(spec, {"space": moved}, "mine")
    check_same(spec, {"space": space}, "mine")
