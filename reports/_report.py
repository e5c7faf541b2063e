"""``write_report``: read the studies, fit, draw every figure that applies, write the summary.

Everything that can reject the input (paths, Parquet, statuses, formats, the output folder)
is checked before the first file is written, so bad input leaves nothing behind.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ._config import DEFAULT_BOOTSTRAP, FORMATS, check_formats
from ._errors import NothingToPlot, ReportError
from ._load import StudyData, StudyPaths, read_studies


@dataclass
class ReportResult:
    """What ``write_report`` wrote, and what it did not draw and why."""

    out: Path
    figures: dict[str, list[Path]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # figure name -> reason
    fits_csv: Path | None = None
    summary: Path | None = None
    fits: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def files(self) -> list[Path]:
        """Every file written."""
        paths = [p for ps in self.figures.values() for p in ps]
        return [*paths, *(p for p in (self.fits_csv, self.summary) if p is not None)]


def default_out(study_dirs: Sequence[Path]) -> Path:
    """``STUDY/report``; comparing studies, ``FIRST/report/compare_<other>[_<other>…]``."""
    first = Path(study_dirs[0])
    if len(study_dirs) == 1:
        return first / "report"
    names = "_".join(_slug(Path(d).resolve().name) for d in study_dirs[1:])
    return first / "report" / f"compare_{names}"


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "-", name).strip("-") or "study"


def write_report(
    study_dirs: StudyPaths,
    out: str | Path | None = None,
    formats: Sequence[str] = ("png",),
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> ReportResult:
    """Write figures, ``fits.csv`` and ``summary.md`` for one or several studies into `out`.

    Raises ReportError, before writing anything, when the input cannot make a report.
    """
    say = progress or (lambda _msg: None)
    formats = check_formats(formats)
    if n_boot < 0:
        raise ReportError(f"bootstrap count must be >= 0, got {n_boot}")
    dirs = [Path(d) for d in ([study_dirs] if isinstance(study_dirs, str | Path) else study_dirs)]
    data = read_studies(dirs)
    _check_usable(data)
    out_dir = Path(out) if out is not None else default_out(dirs)
    _check_out(out_dir)
    # fitting and plotting need scipy and matplotlib: import them once the input is known good
    from ._fit import fit_feature_updates
    from ._plot_curves import plot_training_curves
    from ._plot_damping import plot_damping
    from ._plot_measure import MEASURE, measure_correlations, plot_measure
    from ._plot_phase import plot_phase_diagram
    from ._plot_updates import plot_feature_updates
    from ._summary import render_summary

    fits = fit_feature_updates(data.trials, n_boot=n_boot, seed=seed, progress=say)
    result = ReportResult(out=out_dir, fits=fits)
    say(f"drawing figures into {out_dir}…")
    out_dir.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Callable[[Path], list[Path]]] = {
        "feature_updates": lambda p: plot_feature_updates(data.trials, p, fits, formats),
        "phase_diagram": lambda p: plot_phase_diagram(data.trials, p, formats),
        "training_curves": lambda p: plot_training_curves(data.metrics, data.trials, p, formats),
        "damping": lambda p: plot_damping(data.trials, p, formats),
        "proxy_vs_measure": lambda p: plot_measure(data.trials, p, formats),
    }
    for name, draw in figures.items():
        try:
            result.figures[name] = draw(out_dir / name)
        except NothingToPlot as why:
            result.skipped[name] = str(why)
        _remove_stale_pages(out_dir, name, result.figures.get(name, []))
    correlations = measure_correlations(data.trials, MEASURE)
    result.fits_csv = _write_text(out_dir / "fits.csv", fits.to_csv(index=False))
    summary = render_summary(data.trials, fits, correlations, result.figures, result.skipped,
                             out_dir, data.dirs)  # fmt: skip
    result.summary = _write_text(out_dir / "summary.md", summary)
    return result


def _remove_stale_pages(out_dir: Path, name: str, written: list[Path]) -> None:
    """Delete this figure's files from an earlier report that this one did not write (a
    study with fewer groups now, or a figure no longer drawn), so no old page passes for
    new. Only `<name>.<fmt>` and `<name>_<page>.<fmt>` of the report's own formats."""
    pattern = re.compile(rf"^{re.escape(name)}(_[0-9]+)?\.({'|'.join(FORMATS)})$")
    keep = {p.resolve() for p in written}
    for path in out_dir.iterdir():
        if pattern.match(path.name) and path.is_file() and path.resolve() not in keep:
            path.unlink()


def _check_usable(data: StudyData) -> None:
    """A report needs at least one trial that finished or is running with rows."""
    trials = data.trials
    where = ", ".join(str(d) for d in data.dirs)
    if trials.empty or data.metrics.empty:
        raise ReportError(f"{where}: no metric rows yet; nothing to report")
    alive = trials["exclusion"].isin(["", "in progress"]) & (trials["n_rows"] > 0)
    if alive.any():
        return
    counts = trials["exclusion"].value_counts()
    if set(counts.index) == {"diverged"}:
        raise ReportError(f"{where}: all {len(trials)} trials diverged; nothing to report")
    detail = ", ".join(f"{n} {reason}" for reason, n in counts.items())
    raise ReportError(f"{where}: no usable trial ({detail}); nothing to report")


def _check_out(out_dir: Path) -> None:
    for parent in (out_dir, *out_dir.parents):
        if parent.exists():
            if not parent.is_dir():
                raise ReportError(f"--out {out_dir}: {parent} is a file, not a folder")
            if not os.access(parent, os.W_OK):
                raise ReportError(f"--out {out_dir}: {parent} is not writable")
            return


def _write_text(path: Path, text: str) -> Path:
    """Write via a temporary file and a rename, like the study service."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def stderr_progress(message: str) -> None:
    """Progress on stderr, for longer work."""
    print(message, file=sys.stderr, flush=True)
