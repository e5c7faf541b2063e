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

from ._config import (
    DEFAULT_BOOTSTRAP,
    FIGURES,
    FORMATS,
    NOT_REQUESTED,
    check_figures,
    check_formats,
)
from ._errors import NothingToPlot, ReportError
from ._load import StudyData, StudyPaths, read_studies
from ._paths import StudyDir, as_study_dir, is_local, is_uri, local_out, locate, study_name


@dataclass
class ReportResult:
    """What ``write_report`` wrote, and what it did not draw and why."""

    out: Path
    figures: dict[str, list[Path]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # figure name -> reason
    fits_csv: Path | None = None
    summary: Path | None = None
    selected_csv: Path | None = None
    fits: pd.DataFrame = field(default_factory=pd.DataFrame)
    selected: pd.DataFrame = field(default_factory=pd.DataFrame)
    tables: dict[str, Path] = field(default_factory=dict)  # stability.csv, arms.csv, …
    stability: pd.DataFrame = field(default_factory=pd.DataFrame)  # per (K, lr) cell
    stability_trials: pd.DataFrame = field(default_factory=pd.DataFrame)  # per trial, classified
    arms: pd.DataFrame = field(default_factory=pd.DataFrame)  # Fig. 8: per trial of each arm

    @property
    def files(self) -> list[Path]:
        """Every file written."""
        paths = [p for ps in self.figures.values() for p in ps]
        extra = (self.fits_csv, self.selected_csv, *self.tables.values(), self.summary)
        return [*paths, *(p for p in extra if p is not None)]


def default_out(study_dirs: Sequence[StudyDir]) -> Path:
    """``STUDY/report``; comparing studies, ``FIRST/report/compare_<other>[_<other>…]``.

    A study on a remote store (an ``s3://``-like URI) cannot hold a local report: then the
    report goes to ``./report-<study name>`` in the working directory (absolute, so the
    printed location is unambiguous).
    """
    first = as_study_dir(study_dirs[0])
    if is_local(first):
        base = (Path(first) if not is_uri(first) else Path(locate(first).path)) / "report"
    else:
        base = Path.cwd() / f"report-{_slug(study_name(first))}"
    if len(study_dirs) == 1:
        return base
    names = "_".join(_slug(study_name(as_study_dir(d))) for d in study_dirs[1:])
    return base / f"compare_{names}"


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "-", name).strip("-") or "study"


def write_report(
    study_dirs: StudyPaths,
    out: str | Path | None = None,
    formats: Sequence[str] = ("png",),
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    tune: Sequence[str] = ("lr",),
    match_train_loss: float | None = None,
    figures: Sequence[str] | None = None,
) -> ReportResult:
    """Write figures, ``fits.csv``, ``selected.csv`` and ``summary.md`` into `out`.

    `tune` are the keys selected per K on validation accuracy for the tuned view (empty: no
    tuned view); `match_train_loss` is the target of the matched view (None: each group's
    worst final training loss); `figures` are the figures to draw (None: all of ``FIGURES``;
    the others are skipped as "not requested", their pages from an earlier report removed,
    and the tables that come with a figure come only with it). Raises ReportError, before
    writing anything, when the input cannot make a report.
    """
    say = progress or (lambda _msg: None)
    formats = check_formats(formats)
    wanted = check_figures(figures)
    if n_boot < 0:
        raise ReportError(f"bootstrap count must be >= 0, got {n_boot}")
    given = [study_dirs] if isinstance(study_dirs, str | Path) else study_dirs
    dirs = [as_study_dir(d) for d in given]  # a URI stays a string: pathlib would mangle it
    data = read_studies(dirs)
    _check_usable(data)
    out_dir = local_out(out) if out is not None else default_out(dirs)
    _check_out(out_dir)
    from ._stability import read_phases

    phases = read_phases(data.dirs, data.trials)  # a corrupt phases file rejects the input too
    # fitting and plotting need scipy and matplotlib: import them once the input is known good
    from ._fit import fit_feature_updates
    from ._plot_adaptive import plot_adaptive
    from ._plot_arms import arms_table, plot_arms
    from ._plot_curves import plot_training_curves
    from ._plot_matched import plot_matched_train_loss
    from ._plot_measure import MEASURE, measure_correlations, plot_measure
    from ._plot_phase import plot_phase_diagram
    from ._plot_stability import plot_stability, plot_stability_map
    from ._plot_sweep import plot_damping, plot_lr
    from ._plot_updates import plot_feature_updates
    from ._stability import stability_table, trial_stability
    from ._summary import render_summary
    from ._tune import tune_on_validation

    tuning = tune_on_validation(data.trials, tuple(tune)) if tune else None
    tuned = tuning.trials if tuning is not None and not tuning.refused else None
    fits = fit_feature_updates(data.trials, n_boot=n_boot, seed=seed, progress=say)
    fits.insert(1, "view", "fixed")
    if tuned is not None and len(tuned):
        tuned_fits = fit_feature_updates(tuned, n_boot=n_boot, seed=seed, progress=say)
        tuned_fits.insert(1, "view", "tuned")
        fits = pd.concat([fits, tuned_fits], ignore_index=True)
    fixed_fits, tuned_fits = fits[fits["view"] == "fixed"], fits[fits["view"] == "tuned"]
    selected = tuning.selected if tuned is not None else pd.DataFrame()
    per_trial = trial_stability(data.metrics, data.trials, phases)
    arms = arms_table(data.trials)
    result = ReportResult(out=out_dir, fits=fits, selected=selected, arms=arms,
                          stability=stability_table(per_trial), stability_trials=per_trial)  # fmt: skip
    say(f"drawing figures into {out_dir}…")
    out_dir.mkdir(parents=True, exist_ok=True)
    tuned_note = f"{', '.join(tune)} selected per K on validation"
    matched_view = tuned if tuned is not None and len(tuned) else data.trials
    matched_note = tuned_note if matched_view is tuned else ""
    drawers: dict[str, Callable[[Path], list[Path]]] = {
        "feature_updates": lambda p: plot_feature_updates(data.trials, p, fixed_fits, formats),
        "feature_updates_tuned": lambda p: _tuned_figure(
            tuned, lambda: plot_feature_updates(tuned, p, tuned_fits, formats, tuned_note)
        ),
        "matched_train_loss": lambda p: plot_matched_train_loss(
            data.metrics, matched_view, p, formats, match_train_loss, matched_note
        ),
        "phase_diagram": lambda p: plot_phase_diagram(data.trials, p, formats),
        "training_curves": lambda p: plot_training_curves(data.metrics, data.trials, p, formats),
        "lr": lambda p: plot_lr(data.trials, p, formats),
        "damping": lambda p: plot_damping(data.trials, p, formats),
        "proxy_vs_measure": lambda p: plot_measure(data.trials, p, formats),
        "adaptive_placement": lambda p: plot_adaptive(data.trials, p, formats),
        "stability": lambda p: plot_stability(
            data.metrics, data.trials, phases, p, formats, tuning
        ),
        "stability_map": lambda p: plot_stability_map(result.stability, p, formats),
        "arms": lambda p: plot_arms(arms, p, formats, data.trials),
    }
    assert tuple(drawers) == FIGURES, "reports._config.FIGURES lists every figure in order"
    for name, draw in drawers.items():
        try:
            if name not in wanted:
                raise NothingToPlot(NOT_REQUESTED)
            result.figures[name] = draw(out_dir / name)
        except NothingToPlot as why:
            result.skipped[name] = str(why)
        _remove_stale_pages(out_dir, name, result.figures.get(name, []))
    correlations = measure_correlations(data.trials, MEASURE)
    result.fits_csv = _write_text(out_dir / "fits.csv", fits.to_csv(index=False))
    selected_file = out_dir / "selected.csv"
    if len(selected):
        result.selected_csv = _write_text(selected_file, selected.to_csv(index=False))
    elif selected_file.is_file():  # an earlier report's selection would pass for this one's
        selected_file.unlink()
    stability_drawn = bool(result.figures.get("stability") or result.figures.get("stability_map"))
    csvs = {"stability.csv": result.stability if stability_drawn else None,
            "stability_trials.csv": _trial_csv(per_trial) if stability_drawn else None,
            "arms.csv": arms if result.figures.get("arms") else None}  # fmt: skip
    for name, frame in csvs.items():
        if frame is not None:
            result.tables[name] = _write_text(out_dir / name, frame.to_csv(index=False))
        elif (out_dir / name).is_file():  # an earlier report's table would pass for this one's
            (out_dir / name).unlink()
    summary = render_summary(data.trials, fits, correlations, result.figures, result.skipped,
                             out_dir, data.dirs, tuning, match_train_loss)  # fmt: skip
    summary += stability_section(result, out_dir)
    result.summary = _write_text(out_dir / "summary.md", summary)
    return result


def _trial_csv(per_trial: pd.DataFrame) -> pd.DataFrame:
    """The per-trial stability table without its internal key columns."""
    return per_trial[[c for c in per_trial.columns if not str(c).startswith("__")]]


# Issue 21's figures, listed in their own section of summary.md (the figures section lists the
# figures it knows by name).
EXTRA_TITLES = {
    "stability": "Stability: lr·λ_max against the edge 2, and the loss jump at feature updates",
    "stability_map": "Stability map: seeds trained and mean validation accuracy over K × lr",
    "arms": "Fig. 8: IL solved to convergence against K=∞ and K=1, train beside test accuracy",
}


def stability_section(result: ReportResult, out_dir: Path) -> str:
    """The summary's block for the stability figures, their tables, the divergence classes,
    and the Fig. 8 arms (markdown, starting with a blank line)."""
    from ._stability import summary_lines

    lines = ["", "## Stability and the Fig. 8 arms\n"]
    for name, title in EXTRA_TITLES.items():
        paths = result.figures.get(name, [])
        if paths:
            links = ", ".join(f"[{p.name}]({_rel(p, out_dir)})" for p in paths)
            lines.append(f"### {title}\n\nFiles: {links}\n")
            lines += [f"![{title}]({_rel(p, out_dir)})\n" for p in paths
                      if p.suffix in (".png", ".svg")][:1]  # fmt: skip
        elif name in result.skipped:
            lines.append(f"### {title}\n\nNot drawn: {result.skipped[name]}.\n")
    if "stability.csv" in result.tables:
        lines.append("### Divergence against the edge lr·λ = 2\n")
        lines.append("Per (K, lr) cell in `stability.csv` (seeds, trained, diverged, largest "
                     "lr·λ, divergence steps, largest |lin_gap|, class counts); per trial in "
                     "`stability_trials.csv`.\n")  # fmt: skip
        lines += summary_lines(result.stability_trials)
    if "arms.csv" in result.tables:
        lines.append("Fig. 8 arms: one row per trial in `arms.csv`, with the feature updates N "
                     "each trial made.\n")  # fmt: skip
    return "\n".join(lines) + "\n"


def _rel(path: Path, out: Path) -> str:
    try:
        return path.relative_to(out).as_posix()
    except ValueError:
        return path.as_posix()


def _tuned_figure(tuned: pd.DataFrame | None, draw: Callable[[], list[Path]]) -> list[Path]:
    if tuned is None or tuned.empty:
        raise NothingToPlot("no tuned view: no tuned key varies at a K (or no val_acc; see Tuning)")
    return draw()


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
