"""The one error the reports package raises on bad input."""

from __future__ import annotations


class ReportError(ValueError):
    """Bad input: no results, a Parquet file that is not ours or is corrupt, nothing usable.

    The message is one line, fit to print as it stands; ``python -m reports`` exits 2 with it.
    """


class NothingToPlot(ReportError):
    """The data hold nothing this figure can show; the message says why."""
