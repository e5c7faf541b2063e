"""Issue #5, bad input and security: exit 2, one line, no traceback, storage untouched.

The cases not already in tests/test_study_cli.py. All run the CLI's `main(argv)` in-process
and need no Ray: validation happens before Ray is started.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from study.run import main
from tests.test_study_smoke import _tree

pytestmark = pytest.mark.timeout(120)


def _refused(argv: list[str], capsys: pytest.CaptureFixture[str], root: Path) -> str:
    """main(argv) exits 2 with one `error:` line; nothing under `root` changes (names, sizes,
    mtimes)."""
    before = _tree(root)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ") and "Traceback" not in err
    assert _tree(root) == before
    return err


@pytest.fixture
def populated(storage: Path) -> Path:
    """Storage holding another study's files, so "untouched" is checked against content."""
    other = storage / "other" / "results"
    other.mkdir(parents=True)
    (other / "trials.parquet").write_bytes(b"PAR1 stand-in")
    (storage / "other" / "study.json").write_text(json.dumps({"format": 1}))
    return storage


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["k=abc"], "--set k=abc: "),
        (["lr=-1"], "lr"),
        (["total_steps=0"], "total_steps"),
        (["batch_size=-3"], "batch_size"),
        (["damping=-1"], "damping"),
        (["dataset=imagenet"], "dataset"),
    ],
)
def test_bad_config_values_are_refused(
    overrides: list[str], expected: str, populated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--space", "smoke", "--storage", str(populated)]
    for item in overrides:
        argv += ["--set", item]
    err = _refused(argv, capsys, populated.parent)
    assert expected in err
    assert "must" in err or "allowed" in err or "expected" in err, err  # says what is allowed


def test_missing_torchvision_data_is_refused_before_anything_is_created(
    populated: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before the fix the study folder was created and every trial errored (exit 1)."""
    data = tmp_path / "no-data"
    argv = ["--space", "smoke", "--storage", str(populated), "--set", "dataset=mnist",
            "--set", f"data_dir={data}"]  # fmt: skip
    err = _refused(argv, capsys, tmp_path)
    assert "dataset=mnist: files not found under" in err and "download=true" in err
    assert not (populated / "smoke").exists() and not data.exists()


def test_unusable_storage_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A storage path whose parent is a file cannot be created."""
    (tmp_path / "afile").write_text("x")
    err = _refused(
        ["--space", "smoke", "--storage", str(tmp_path / "afile" / "studies")], capsys, tmp_path
    )
    assert "--storage" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["--space", "../x"],
        ["--space", "/etc/passwd"],
        ["--space", "a/b"],
        ["--space", "smoke", "--name", "../x"],
        ["--space", "smoke", "--name", "/tmp/abs"],
        ["--space", "smoke", "--name", "a/../../b"],
        ["--resume", "--name", "../other"],
    ],
)
def test_user_names_cannot_escape_the_storage_folder(
    argv: list[str], populated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _refused([*argv, "--storage", str(populated)], capsys, populated.parent)
    assert "not allowed" in err or "unknown space" in err


def test_resume_of_a_missing_study_names_it(
    populated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _refused(["--resume", "--name", "ghost", "--storage", str(populated)], capsys, populated)
    assert "no study 'ghost'" in err


@pytest.mark.parametrize("content", [b"", b'{"trial_data": [', b"\x80\x04 not json"])
def test_resume_of_a_study_with_broken_state_names_the_file(
    content: bytes, populated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Empty, truncated or non-JSON experiment state: exit 2 naming it, results untouched."""
    study = populated / "other"
    (study / "tuner.pkl").write_bytes(b"\x80\x04N.")  # pickle of None
    state = study / "experiment_state-2026-01-01_00-00-00.json"
    state.write_bytes(content)
    err = _refused(["--resume", "--name", "other", "--storage", str(populated)], capsys, populated)
    assert state.name in err and "cannot resume" in err
    assert os.path.getsize(study / "results" / "trials.parquet") > 0


@pytest.mark.ray
def test_a_node_that_does_not_answer_the_storage_probe_is_named(
    ray_session: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, the probe's GetTimeoutError escaped as a traceback from `python -m study.run`."""
    import study.cluster as cluster
    from study.errors import StudyError

    monkeypatch.setattr(cluster, "PROBE_TIMEOUT_S", 0.0)
    monkeypatch.setattr(ray_session, "wait", lambda refs, **kw: ([], refs))
    with pytest.raises(StudyError, match=r"node\(s\) .* did not answer the shared-storage check"):
        cluster._nodes_not_seeing(str(tmp_path), cluster.alive_nodes())
