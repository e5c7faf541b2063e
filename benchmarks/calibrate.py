"""Calibrate `--list`'s expected run times: python -m benchmarks.calibrate [--per-space 3].

For every built-in space whose data is on this machine, a few of its real trials run to the end
in this process, one torch thread each (as a study gives a trial one CPU): configs spread over
the space's grid, so K's and trainers' costs are all in the mean. Then the `smoke` space runs
once through the service on the embedded Ray, which measures what a study adds: Ray's start-up
and shutdown, and each trial's reporting and checkpointing on top of its compute.

The figures go to `search_spaces/calibration.json`, with this command and the machine, and
`--list` and a study's ETA read them from there; nothing else holds a timing. Spaces whose data
or device this machine lacks (the CIFAR-10 paper spaces) keep their stated estimates.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent.parent / "search_spaces" / "calibration.json"
COMMAND = "python -m benchmarks.calibrate"


def _configs(name: str, per_space: int) -> list[dict[str, Any]]:
    """Up to `per_space` of the space's trial configs, spread evenly over its points."""
    import search_spaces
    from study.plan import _combinations, build_plan, default_num_samples
    from study.request.spec import StudySpec

    own = search_spaces.get(name)
    spec = StudySpec(
        space=name, searcher=own.searcher, num_samples=default_num_samples(own, own.searcher)
    )
    space = build_plan(spec).space
    points = list(_combinations(space))
    if len(points) <= per_space:
        return points
    step = (len(points) - 1) / (per_space - 1) if per_space > 1 else 0
    return [points[round(i * step)] for i in range(per_space)]


def _trial_seconds(config: dict[str, Any]) -> float:
    """Wall time of one whole trial in this process, its data already loaded once."""
    import trainables

    start = time.perf_counter()
    for _ in trainables.run(config):
        pass
    return time.perf_counter() - start


def _available(name: str) -> bool:
    import search_spaces
    from trainables import TrialConfig
    from trainables.catalog import check_available

    space = search_spaces.get(name)
    try:
        check_available(TrialConfig.from_mapping(dict(space.fixed)))
    except Exception:
        return False
    return True


def _study_overhead(repeats: int = 3) -> tuple[float, float]:
    """(start-up s, per-trial s) a study adds, from the smoke space through the service.

    The smoke grid runs `repeats` times, so most trials land on a reused actor as in a long
    study: the median trial's wall time less its in-process time is what each trial adds, and
    the rest of the study's wall time (Ray's start, the first actors' imports, shutdown) is
    start-up.
    """
    import pandas as pd

    from study.service import StudyOptions, run_study

    alone = statistics.median(_trial_seconds(c) for c in _configs("smoke", 100))
    with tempfile.TemporaryDirectory() as storage:
        start = time.perf_counter()
        options = StudyOptions(space="smoke", storage=storage, num_samples=repeats)
        outcome = run_study(options, out=io.StringIO())
        wall = time.perf_counter() - start
        if outcome.exit_code != 0:
            raise SystemExit("calibrate: the smoke study failed; nothing written")
        trials = pd.read_parquet(Path(storage) / "smoke" / "results" / "trials.parquet")
    typical = float(trials["wall_s"].median())
    parallel = max(1, min(len(trials), os.cpu_count() or 1))
    waves = -(-len(trials) // parallel)
    return max(0.0, wall - waves * typical), max(0.0, typical - alone)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--per-space", type=int, default=3, help="trials timed per space")
    p.add_argument("--spaces", nargs="*", help="only these (default: every one it can run)")
    p.add_argument("--out", default=str(OUT), help="where the calibration goes")
    args = p.parse_args(argv)

    import torch

    import search_spaces

    torch.set_num_threads(1)
    names = args.spaces or [n for n in search_spaces.names() if _available(n)]
    spaces: dict[str, Any] = {}
    for name in names:
        times = [_trial_seconds(c) for c in _configs(name, args.per_space)]
        spaces[name] = {"trial_s": round(statistics.fmean(times), 3), "trials_timed": len(times)}
        print(f"{name:<14} mean trial {spaces[name]['trial_s']:.2f} s over {len(times)} "
              "trials (in-process, 1 torch thread)", flush=True)  # fmt: skip
    startup, per_trial = _study_overhead()
    print(f"study start-up and shutdown {startup:.2f} s; a study adds {per_trial:.2f} s per trial")
    payload = {
        "command": COMMAND + (f" --per-space {args.per_space}" if args.per_space != 3 else ""),
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "startup_s": round(startup, 3),
        "per_trial_overhead_s": round(per_trial, 3),
        "spaces": spaces,
    }
    Path(args.out).write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
