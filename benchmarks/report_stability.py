"""Claim: the report's per-trial stability reading (`reports._stability.trial_stability`)
works on each trial's columns as float arrays, cut once, not on pandas frames filtered afresh
for every measure it reads.

A synthetic study with the stability measures and phases files (the writer of
tests/reports/test_reports_stability.py: trials that diverge or train, with curvature and
feature-update gaps drawn at random) is read by today's implementation and by the one it
replaced, loaded from git (commit BEFORE), interleaved, on the same frames. Both tables are
checked equal first.

Run:   python -m benchmarks.report_stability [--trials N] [--smoke]
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import random
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import pandas as pd
import torch

from benchmarks import _common as C

BEFORE = "9e246aa"  # the baseline: reports._stability as it read frames, loaded from git
ROOT = Path(__file__).resolve().parent.parent


def _before() -> ModuleType | None:
    """reports._stability as of BEFORE, as a module of the reports package (None: no git)."""
    try:
        source = subprocess.run(["git", "show", f"{BEFORE}:reports/_stability.py"], cwd=ROOT,
                                capture_output=True, text=True, check=True).stdout  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None
    spec = importlib.util.spec_from_loader("reports._stability_before", loader=None)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "reports"
    sys.modules[spec.name] = module  # its dataclasses look their module up
    exec(compile(source, f"{BEFORE}:reports/_stability.py", "exec"), module.__dict__)
    return module


def _trials(n: int, seed: int = 0) -> list:
    from tests.reports.test_reports_stability import Trial

    rng, out = random.Random(seed), []
    for i in range(n):
        t = Trial(k=rng.choice([1, 5, 10, 25, math.inf]), lr=rng.choice([0.05, 0.1, 0.2]),
                  seed=i, optimizer=rng.choice(["sgd", "sgd", "adam"]))  # fmt: skip
        if rng.random() < 0.5:
            t.diverge_at = rng.choice([20, 40, 60, 80])
        a, b, c, j0 = rng.uniform(1, 15), rng.uniform(0, 0.2), rng.uniform(0, 6), rng.randint(0, 4)
        t.lam = lambda step, a=a, b=b: a + b * step
        t.gaps = lambda j, c=c, j0=j0: 0.05 if j < j0 else c
        if rng.random() < 0.3:
            t.measured = lambda j: j % 2 == 0
        out.append(t)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=400, help="trials in the study (default: 400)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--smoke", action="store_true", help="20 trials, 2 rounds")
    args = p.parse_args(argv)
    n, rounds = (20, 2) if args.smoke else (args.trials, args.rounds)

    from reports._load import read_studies
    from reports._stability import read_phases, trial_stability
    from tests.reports.test_reports_stability import write_study

    before = _before()
    with tempfile.TemporaryDirectory() as tmp:
        data = read_studies(write_study(Path(tmp), "bench", _trials(n)))
        phases = read_phases(data.dirs, data.trials)
    variants = {"arrays": lambda: trial_stability(data.metrics, data.trials, phases)}
    if before is not None:
        pd.testing.assert_frame_equal(variants["arrays"](),
                                      before.trial_stability(data.metrics, data.trials, phases))  # fmt: skip
        variants["frames"] = lambda: before.trial_stability(data.metrics, data.trials, phases)
    times = C.interleaved(variants, rounds, reps=1, device=torch.device("cpu"))
    print(C.environment(torch.device("cpu")))  # the machine, as every benchmark prints it
    print(f"# {len(data.trials)} trials, {len(data.metrics)} records, {len(phases)} phase rows")
    new = times.median("arrays", "wall")
    if before is None:
        print(f"arrays {new * 1e3:.1f} ms; the frame-based baseline needs git and commit {BEFORE}")
        return
    old = times.median("frames", "wall")
    print(f"arrays {new * 1e3:.1f} ms, frames ({BEFORE}) {old * 1e3:.1f} ms "
          f"(median of {rounds} rounds; tables equal)")  # fmt: skip
    ratio = times.ratio("frames", "arrays", "wall")
    print(f"ratio per-trial stability reading, frames ({BEFORE}) / arrays: {ratio:.2f}")


if __name__ == "__main__":
    main()
