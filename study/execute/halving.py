"""Synchronous successive halving for one cell (one K and seed): plain data, no Ray.

Every trial of the cell reaches a rung before any of them is judged there, so what is stopped
depends only on the values at the rungs: not on the order the grid lists the learning rates
in, nor on how many trials run at once. A trial that reaches a rung early waits (Tune pauses
it, `study.execute.asha`). When the rung is complete the best ⌈n/η⌉ of its n trials go on and
the rest stop. Ties go to the smaller tuned value (the smaller learning rate), and a NaN metric
ranks last, so the ranking is a total order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

CONTINUE, PAUSE, STOP = "CONTINUE", "PAUSE", "STOP"


def rungs(max_t: int, grace_period: int, reduction_factor: float) -> list[int]:
    """Record counts at which a race judges: grace·η^k below the last record."""
    out, t = [], float(grace_period)
    while t < max_t:
        out.append(math.ceil(t))
        t *= reduction_factor
    return sorted(set(out))


def _order(value: Any) -> tuple:
    """A sort key for a tuned value (numbers before anything else)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, repr(value))


@dataclass
class CellRace:
    """One cell's race. `expected` is how many trials the cell will have (None: unknown, then
    a rung waits for the trials added so far; the scheduler judges it when nothing else can
    run). Trial ids are Tune's; `tuned` holds each trial's tuned values, for ties."""

    milestones: list[int]
    reduction_factor: float
    mode: str = "max"
    expected: int | None = None
    tuned: dict[str, tuple] = field(default_factory=dict)
    recorded: list[dict[str, float]] = field(default_factory=list)  # per rung: trial → value
    judged: list[bool] = field(default_factory=list)
    losers: set[str] = field(default_factory=set)  # trials the race stopped
    ended: set[str] = field(default_factory=set)  # trials that ended by themselves

    def __post_init__(self) -> None:
        self.recorded = self.recorded or [{} for _ in self.milestones]
        self.judged = self.judged or [False for _ in self.milestones]

    def add(self, trial_id: str, tuned: Sequence[Any]) -> None:
        self.tuned.setdefault(trial_id, tuple(tuned))

    def end(self, trial_id: str) -> None:
        """The trial finished, diverged or failed for good: no rung waits for it."""
        if trial_id not in self.losers:
            self.ended.add(trial_id)

    def waiting_at(self, trial_id: str) -> int | None:
        """The rung the trial has reached and waits at (not judged yet), or None."""
        for r, recorded in enumerate(self.recorded):
            if trial_id in recorded and not self.judged[r]:
                return r
        return None

    def on_result(self, trial_id: str, t: int, value: float) -> str:
        """The decision for a result at record count `t` (a replayed record too)."""
        if trial_id in self.losers:
            return STOP
        for r, milestone in enumerate(self.milestones):
            if t < milestone:
                break
            if trial_id not in self.recorded[r]:
                self.recorded[r][trial_id] = value
                self.judge(r)
            if trial_id in self.losers:
                return STOP
            if not self.judged[r]:
                return PAUSE
        return CONTINUE

    def _entrants(self, r: int) -> set[str]:
        """Trials that may still reach rung r: survivors of every earlier rung, not ended."""
        alive = set(self.tuned) - self.losers
        for earlier in range(r):
            alive &= set(self.recorded[earlier])
        return alive

    def complete(self, r: int) -> bool:
        """Every trial that can reach rung r has (trials the cell has yet to add included)."""
        if self.expected is not None and len(self.tuned) < self.expected:
            return False
        return all(t in self.recorded[r] or t in self.ended for t in self._entrants(r))

    def judge(self, r: int, force: bool = False) -> list[str]:
        """Judge rung r if complete (or forced): the trials it stops, best first kept."""
        if self.judged[r] or not (force or self.complete(r)):
            return []
        if any(not self.judged[earlier] for earlier in range(r)):
            return []
        self.judged[r] = True
        entrants = [t for t in self.recorded[r] if t not in self.losers]
        sign = -1.0 if self.mode == "max" else 1.0

        def rank(trial_id: str) -> tuple:
            value = self.recorded[r][trial_id]
            bad = math.isnan(value)
            return (bad, 0.0 if bad else sign * value, [_order(v) for v in self.tuned[trial_id]])

        ranked = sorted(entrants, key=rank)
        keep = math.ceil(len(ranked) / self.reduction_factor)
        stopped = ranked[keep:]
        self.losers.update(stopped)
        if r + 1 < len(self.milestones):
            self.judge(r + 1)  # everyone left may already be waiting there
        return stopped

    def may_run(self, trial_id: str) -> bool:
        """Whether a paused trial may run again: it waits at no rung, or is to be stopped."""
        return trial_id in self.losers or self.waiting_at(trial_id) is None
