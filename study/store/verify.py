"""Is a study's stored data what was written? Every Parquet file checked against its content
checksum (study.store.checksum), for `python -m study.status --verify` and the resume.

Also here: the rows Tune logged for a trial (`result.json`), one of the sources a resume
rebuilds a finished trial's file from when its checkpoints hold fewer rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from study.store.checksum import MISMATCH, NO_CHECKSUM, OK, checksum_state
from study.store.fs import StudyPaths, read_parquet
from study.store.layout import reported_row

UNREADABLE, MISSING = "unreadable", "missing"
BAD = (MISMATCH, UNREADABLE, MISSING)
RESULT_FILE = "result.json"  # Tune's log of every result a trial reported, one JSON per line
__all__ = [
    "BAD",
    "MISSING",
    "NO_CHECKSUM",
    "OK",
    "UNREADABLE",
    "FileCheck",
    "render_checks",
    "verify_study",
]


# ---------------------------------------------------------------- checking a study


@dataclass(frozen=True)
class FileCheck:
    """One file's verdict: `state` is OK, NO_CHECKSUM, MISMATCH, UNREADABLE or MISSING."""

    path: str  # as the user types it (StudyPaths.display)
    table: str  # "metrics", "phases" or "trials"
    trial_id: str | None
    state: str
    detail: str = ""

    @property
    def bad(self) -> bool:
        return self.state in BAD

    def line(self) -> str:
        who = f"trial {self.trial_id}: " if self.trial_id else ""
        detail = f" ({self.detail})" if self.detail else ""
        return f"{self.state}: {who}{self.path}{detail}"


def check_file(fs: pafs.FileSystem, path: str) -> tuple[str, str]:
    """(state, detail) of one Parquet file of the study."""
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return MISSING, "the file does not exist"
    try:
        table = read_parquet(fs, path)
    except (OSError, pa.ArrowException, ValueError) as exc:
        text = str(exc).strip().splitlines()
        return UNREADABLE, text[0][:160] if text else type(exc).__name__
    state = checksum_state(table)
    if state == MISMATCH:
        return state, "its values differ from the checksum written with them"
    if state == NO_CHECKSUM:
        return state, "written before checksums: values not verifiable"
    return state, ""


def parquet_files(fs: pafs.FileSystem, folder: str) -> dict[str, str]:
    """trial_id → path of each `<trial_id>.parquet` (dotfiles are temporary or set aside)."""
    infos = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
    out = {}
    for info in infos:
        name = PurePosixPath(info.path).name
        if info.type == pafs.FileType.File and name.endswith(".parquet") and name[0] != ".":
            out[name.removesuffix(".parquet")] = info.path
    return dict(sorted(out.items()))


def verify_study(paths: StudyPaths, finished: Iterable[str] = ()) -> list[FileCheck]:
    """Check trials.parquet and every metrics and phases file against its checksum; a
    `finished` trial (ids) whose metrics file is missing is MISSING."""
    fs = paths.storage.fs
    checks = []
    if fs.get_file_info(paths.trials).type != pafs.FileType.NotFound:
        checks.append(FileCheck(paths.display(paths.trials), "trials", None, *check_file(fs, paths.trials)))  # fmt: skip
    metrics = parquet_files(fs, paths.metrics)
    for trial_id in sorted(set(finished) - set(metrics)):
        shown = paths.display(str(PurePosixPath(paths.metrics, f"{trial_id}.parquet")))
        checks.append(FileCheck(shown, "metrics", trial_id, MISSING, "a finished trial's rows"))
    for table, files in (("metrics", metrics), ("phases", parquet_files(fs, paths.phases))):
        for trial_id, path in files.items():
            checks.append(FileCheck(paths.display(path), table, trial_id, *check_file(fs, path)))
    return sorted(checks, key=lambda c: (c.table != "trials", c.trial_id or "", c.table))


def render_checks(name: str, checks: Iterable[FileCheck]) -> str:
    """One line per file that fails, then the counts (what `study.status --verify` prints)."""
    checks = list(checks)
    counts: dict[str, int] = {}
    for check in checks:
        counts[check.state] = counts.get(check.state, 0) + 1
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "no files"
    lines = [c.line() for c in checks if c.bad]
    lines.append(f"verified {len(checks)} files of study {name}: {summary}")
    return "\n".join(lines)


# ---------------------------------------------------------------- Tune's log of a trial


def reported_rows(
    fs: pafs.FileSystem, trial_dir: str, study: str, trial_id: str
) -> list[dict[str, Any]]:
    """The metrics rows a trial reported, from Tune's `result.json` (the latest per step);
    empty when the log is missing or unreadable. A line that does not parse (a kill mid-write)
    is skipped. Rows carry the reported values, so a row rebuilt from here differs from the
    trial's own only in `reported_at` (the report's time, not the record's)."""
    try:
        with fs.open_input_stream(str(PurePosixPath(trial_dir, RESULT_FILE))) as f:
            lines = f.readall().decode(errors="replace").splitlines()
    except (OSError, pa.ArrowException):
        return []
    by_step: dict[int, dict[str, Any]] = {}
    for line in lines:
        try:
            result = json.loads(line)
            by_step[int(result["step"])] = reported_row(study, trial_id, result["config"], result)
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
    return [by_step[s] for s in sorted(by_step)]
