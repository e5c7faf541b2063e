"""One compact progress line per update: done/total, running, best so far, ETA."""

from __future__ import annotations

import math
import sys
import time
from typing import Any, TextIO

from ray.tune import Callback

from study.execute.writer import trial_status
from study.store.layout import ENDED, Status


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}" if h else f"{rem // 60}:{rem % 60:02d}"


class ProgressLine(Callback):
    """Prints on every trial end and at most every `every_s` seconds otherwise."""

    def __init__(
        self,
        study: str,
        total: int,
        metric: str,
        mode: str,
        every_s: float = 10.0,
        stream: TextIO | None = None,
        estimate_s: float | None = None,
    ) -> None:
        self.study, self.total, self.metric, self.mode = study, total, metric, mode
        self.every_s = every_s
        self.estimate_s = estimate_s  # the space's expected run time, until a trial ends
        self.stream = stream  # None: sys.stdout at print time
        self._t0: float | None = None
        self._done_at_start: int | None = None
        self._last_print = 0.0

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles callbacks into tuner.pkl; a restored study prints to its own stdout.
        return {**self.__dict__, "stream": None}

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.print_line(trials)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.print_line(trials)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if self._t0 is None:
            self._t0 = time.time()
        if time.time() - self._last_print >= self.every_s:
            self.print_line(trials)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.print_line(trials)

    def line(self, trials: list) -> str:
        """The progress line for Tune's current trials."""
        now = time.time()
        self._t0 = self._t0 or now
        statuses = [trial_status(t) for t in trials]
        done = sum(s in ENDED for s in statuses)
        errored, diverged = statuses.count(Status.ERROR), statuses.count(Status.DIVERGED)
        running = statuses.count(Status.RUNNING)
        if self._done_at_start is None:
            self._done_at_start = done + errored
        total = max(self.total, len(trials))
        parts = [f"[{self.study}] {done + errored}/{total} done"]
        if diverged or errored:
            parts[0] += f" ({diverged} diverged, {errored} errored)"
        parts.append(f"{running} running")
        best = self._best(trials)
        parts.append(f"best {self.metric} {best:.4f}" if best is not None else "best -")
        elapsed = now - self._t0
        finished_here = done + errored - self._done_at_start
        remaining = total - done - errored
        if remaining == 0:
            eta = "ETA 0:00"
        elif finished_here > 0:
            eta = f"ETA {_clock(elapsed / finished_here * remaining)}"
        elif self.estimate_s:
            eta = f"ETA ~{_clock(max(self.estimate_s - elapsed, 0))} (estimate)"
        else:
            eta = "ETA -"
        parts += [f"elapsed {_clock(elapsed)}", eta]
        return " | ".join(parts)

    def print_line(self, trials: list) -> None:
        print(self.line(trials), file=self.stream or sys.stdout, flush=True)
        self._last_print = time.time()

    def _best(self, trials: list) -> float | None:
        values = [
            float(v)
            for t in trials
            if isinstance(v := (t.last_result or {}).get(self.metric), int | float)
            and math.isfinite(v)
        ]
        if not values:
            return None
        return max(values) if self.mode == "max" else min(values)
