"""Early stopping that stays fair across K: successive halving, one race per (K, seed).

ASHA stops a trial whose metric at a rung is below the best 1/η of the trials recorded there.
Run across a whole study it would compare a K=∞ trial, which learns slowly by nature, with
K=1 trials and stop it: the comparison the study exists to make would be decided by the
scheduler. So the study runs one ASHA race per *cell*: every config key but the keys the
report tunes (the learning rate), so only the learning rates of one K and one seed race each
other. Trials it stops are stored with status STOPPED and all their rows; the report treats
them as the losers of the tuning procedure and never draws them as points of a curve.

Each race is synchronous (`study.execute.halving`): every learning rate of the cell reaches a
rung before any of them is judged there, and then the best ⌈n/η⌉ of the n go on. Tune's
asynchronous ASHA judges a trial against those that reached the rung before it, so what it
stopped depended on the order the grid listed the learning rates in and on how many trials ran
at once; this does not. Ties go to the smaller learning rate; a NaN metric ranks last.

Tune keeps no scheduler state across a resume (it restores the scheduler it pickled when the
study began), so this scheduler writes its races to `<study>/scheduler.pkl` whenever a rung
records a result, and a resumed study continues them: it stops what an unbroken one would.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from study.errors import StudyError

SCHEDULERS = ("fifo", "asha")
TUNED_KEYS = ("lr",)  # what the report tunes per K (reports/_tune.py DEFAULT_TUNED)
TIME_ATTR = "training_iteration"  # records reported so far; the same clock for every K
STATE_FILE = "scheduler.pkl"


def check_scheduler(
    name: str, metric: str, swept: Sequence[str], grace_period: int, reduction_factor: float
) -> None:
    """StudyError unless the scheduler can be used honestly on this study. The values are
    checked whatever the scheduler: a bad one is bad input even where it would be unused."""
    if name not in SCHEDULERS:
        raise StudyError(f"--scheduler {name}: must be one of {', '.join(SCHEDULERS)}")
    if grace_period < 0:
        raise StudyError(f"--grace-period {grace_period}: must be an int >= 1 (0 = default)")
    if not (isinstance(reduction_factor, int | float) and reduction_factor > 1):
        raise StudyError(f"--reduction-factor {reduction_factor}: must be a number > 1")
    if name == "fifo":
        return
    if not metric.startswith("val_"):
        raise StudyError(
            f"--scheduler {name} would stop trials on {metric}; it may rank trials only on a "
            "validation metric (val_acc or val_loss): selecting on test is never done"
        )
    tuned = [k for k in TUNED_KEYS if k in swept]
    if not tuned:
        raise StudyError(
            f"--scheduler {name} stops trials only in a race between the values of a key the "
            f"report tunes per K ({', '.join(TUNED_KEYS)}), and this study does not sweep it"
        )


def records_per_trial(config: Mapping[str, Any]) -> int:
    """Records a full trial reports: step 0, every eval_every steps, and the last step."""
    total = int(config.get("total_steps", 1000))
    every = max(1, int(config.get("eval_every", 100)))
    return total // every + 1 + (total % every != 0)


def default_grace_period(max_t: int, reduction_factor: float) -> int:
    """The first rung: far enough in that no trial is judged on its step-0 record."""
    return max(2, math.ceil(max_t / reduction_factor**2))


def _comparable(value: Any) -> str:
    """One spelling per value, whichever way Tune's config holds it ("inf" or inf, 1 or 1.0)."""
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, int | float):
        return repr(float(value))
    if isinstance(value, str):
        try:
            return repr(float(value))
        except ValueError:
            return repr(value)
    return repr(value)


def cell_key(config: Mapping[str, Any], tuned_keys: Sequence[str] = TUNED_KEYS) -> tuple:
    """The race a trial runs in: its config without the tuned keys."""
    return tuple(sorted((k, _comparable(v)) for k, v in config.items() if k not in tuned_keys))


def cell_sizes(
    configs: Iterable[Mapping[str, Any]], tuned_keys: Sequence[str] = TUNED_KEYS
) -> dict[tuple, int]:
    """How many trials each race has, from every trial config a study will run."""
    return dict(Counter(cell_key(c, tuned_keys) for c in configs))


def planned_configs(plan: Any) -> list[dict[str, Any]] | None:
    """Every trial config of a grid study as Tune will build it (its fixed keys, the grid's
    product, then the reference points); None for a searcher whose trials are not known."""
    if plan.searcher != "grid":
        return None
    sweep = plan.sweep()
    fixed = {k: spec[1] for k, spec in sweep.items() if spec[0] == "fixed"}
    grid = {k: list(spec[1]) for k, spec in sweep.items() if spec[0] == "grid"}
    configs = [
        {**fixed, **dict(zip(grid, combo, strict=True))}
        for combo in itertools.product(*grid.values())
    ]
    configs += [{**fixed, **point} for point in plan.space.reference_points()]
    return configs
