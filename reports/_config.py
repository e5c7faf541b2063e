"""Defaults shared by the command line and the library (kept free of heavy imports)."""

from __future__ import annotations

from collections.abc import Iterable

from ._errors import ReportError

FORMATS = ("png", "pdf", "svg")  # figure formats; png is the default
DPI = 150  # png resolution (dots per inch); pdf and svg are vector
DEFAULT_BOOTSTRAP = 200  # replicates per fit: a few hundred trials then fit in seconds
CI_LEVEL = 0.95  # every band and interval in the report
# every figure a report can draw, in the order it draws them (``write_report(figures=...)``)
FIGURES = (
    "feature_updates", "feature_updates_tuned", "matched_train_loss", "phase_diagram",
    "training_curves", "lr", "damping", "proxy_vs_measure", "adaptive_placement", "stability",
    "stability_map", "arms",
)  # fmt: skip
NOT_REQUESTED = "not requested"  # the reason a figure left out of `figures` is skipped


def check_formats(formats: Iterable[str]) -> tuple[str, ...]:
    """Validated, de-duplicated formats; a ReportError names an unknown one."""
    out = tuple(dict.fromkeys(f.strip().lower().lstrip(".") for f in formats if f.strip()))
    bad = [f for f in out if f not in FORMATS]
    if bad or not out:
        shown = repr(bad[0]) if bad else "(none)"
        raise ReportError(f"unknown figure format {shown}; choose from {', '.join(FORMATS)}")
    return out


def check_figures(names: Iterable[str] | None) -> tuple[str, ...]:
    """The figures to draw, in drawing order (None: all; "none" or nothing: the tables and the
    summary only); a ReportError names an unknown one."""
    if names is None:
        return FIGURES
    asked = {n.strip() for n in names if n.strip() and n.strip() != "none"}
    unknown = sorted(asked - set(FIGURES))
    if unknown:
        raise ReportError(f"unknown figure {unknown[0]!r}; choose from {', '.join(FIGURES)}")
    return tuple(f for f in FIGURES if f in asked)
