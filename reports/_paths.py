"""Where a study's results lie; pathlib only, so the command line can reject bad paths fast."""

from __future__ import annotations

from pathlib import Path

from ._errors import ReportError


def results_dir(path: Path) -> Path:
    """``path/results``, or `path` itself when it is the results folder."""
    if not path.exists():
        raise ReportError(f"{path}: no such folder")
    if not path.is_dir():
        raise ReportError(f"{path}: not a folder (give a study folder that holds results/)")
    if (path / "results").is_dir():
        return path / "results"
    if path.name == "results" and any((path / n).exists() for n in ("metrics", "trials.parquet")):
        return path
    raise ReportError(f"{path}: no results/ folder here; is this a study folder?")


def metric_files(metrics_dir: Path) -> list[Path]:
    """The finished Parquet files of a metrics dataset, skipping temporary and hidden ones.

    Writes are temp-file-then-rename, so names starting with '.' or '_' or ending in '.tmp'
    (at any depth) are unfinished or not data.
    """
    if not metrics_dir.is_dir():
        return []
    files = []
    for file in sorted(metrics_dir.rglob("*")):
        parts = file.relative_to(metrics_dir).parts
        if any(p.startswith((".", "_")) or p.endswith(".tmp") for p in parts):
            continue
        if file.is_file() and file.suffix == ".parquet":
            files.append(file)
    return files


def find_results(path: Path) -> tuple[Path, list[Path], Path]:
    """(results folder, metrics files, trials.parquet path); ReportError when there are none."""
    results = results_dir(Path(path))
    files = metric_files(results / "metrics")
    trials_file = results / "trials.parquet"
    if not files and not trials_file.is_file():
        raise ReportError(f"{path}: no results yet (no Parquet files under {results})")
    return results, files, trials_file
