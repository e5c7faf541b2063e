"""`--list`: each space with a one-line description, trial count and expected run time."""

from __future__ import annotations

import os

import search_spaces
from study.plan import default_num_samples, estimate_seconds


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def list_spaces(cpus: float | None = None) -> str:
    """A table of the registered spaces, timed for `cpus` CPUs at 1 CPU per trial."""
    cpus = cpus or os.cpu_count() or 1
    lines = [f"{'space':<14} {'trials':>6} {'expected':>9}  (digits, {cpus:g} CPUs)  description"]
    for space in search_spaces.all_spaces():
        trials = space.grid_size() * default_num_samples(space, space.searcher)
        if space.searcher != "grid":
            trials = default_num_samples(space, space.searcher)
        eta = _duration(estimate_seconds(space, trials, cpus))
        lines.append(f"{space.name:<14} {trials:>6} {'~' + eta:>9}  {space.description}")
    return "\n".join(lines)
