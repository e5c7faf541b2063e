"""Defaults shared by the command line and the library (kept free of heavy imports)."""

from __future__ import annotations

from collections.abc import Iterable

from ._errors import ReportError

FORMATS = ("png", "pdf", "svg")  # figure formats; png is the default
DPI = 150  # png resolution (dots per inch); pdf and svg are vector
DEFAULT_BOOTSTRAP = 200  # replicates per fit: a few hundred trials then fit in seconds
CI_LEVEL = 0.95  # every band and interval in the report


def check_formats(formats: Iterable[str]) -> tuple[str, ...]:
    """Validated, de-duplicated formats; a ReportError names an unknown one."""
    out = tuple(dict.fromkeys(f.strip().lower().lstrip(".") for f in formats if f.strip()))
    bad = [f for f in out if f not in FORMATS]
    if bad or not out:
        shown = repr(bad[0]) if bad else "(none)"
        raise ReportError(f"unknown figure format {shown}; choose from {', '.join(FORMATS)}")
    return out
