"""`--list`: each space with a one-line description, trial count and expected run time."""

from __future__ import annotations

import os

import search_spaces
from study.plan import calibration, default_num_samples, estimate_seconds, trial_seconds


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def list_spaces(cpus: float | None = None) -> str:
    """A table of the registered spaces, timed for `cpus` CPUs at 1 CPU per trial."""
    cpus = cpus or os.cpu_count() or 1
    lines = [f"{'space':<14} {'trials':>6} {'expected':>12}  ({cpus:g} CPUs)  description"]
    for space in search_spaces.all_spaces():
        trials = space.grid_trials() * default_num_samples(space, space.searcher)
        if space.searcher != "grid":
            trials = default_num_samples(space, space.searcher)
        seconds = estimate_seconds(space, trials, cpus)
        _, source = trial_seconds(space)
        eta = "?" if seconds is None else "~" + _duration(seconds)
        eta += " est." if source == "estimate" else ""
        lines.append(f"{space.name:<14} {trials:>6} {eta:>12}  {space.description}")
    made = calibration()
    lines.append(
        f"(~ from {made['command']} on {made['machine']['cpus']} CPUs, {made['generated_at']}; "
        "est.: a stated estimate for one GPU, see the README)"
        if made
        else "(no calibration: run python -m benchmarks.calibrate; est.: a stated estimate)"
    )
    return "\n".join(lines)
