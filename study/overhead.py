"""The study's overhead: run a space's trials back to back in this process, without Ray.

    python -m study.overhead --space k_sweep [--threads 1] [--set key=value ...]

Prints the wall time of the same trials `python -m study.run` would run (grid searcher),
so that `study wall time - back-to-back time / parallel trials` is what Ray Tune costs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

from study.errors import StudyError
from study.plan import _combinations, build_plan
from study.service import StudyOptions, new_spec


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m study.overhead", description=__doc__)
    p.add_argument("--space", required=True)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--threads", type=int, default=1, help="torch threads (a trial gets 1)")
    args = p.parse_args(argv)
    import torch

    from trainables import run

    try:
        spec = new_spec(StudyOptions(space=args.space, overrides=args.overrides, smoke=args.smoke))
        plan = build_plan(spec)
    except StudyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if plan.searcher != "grid":
        print("error: only grid spaces have a fixed list of trials to time", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    for i, config in enumerate(_combinations(plan.space), 1):
        t = time.perf_counter()
        records = list(run(config))
        print(f"trial {i}/{plan.total_trials}: {time.perf_counter() - t:.1f} s, "
              f"{len(records)} records", flush=True)  # fmt: skip
    total = time.perf_counter() - t0
    print(f"{plan.total_trials} trials back to back in one process ({args.threads} torch "
          f"thread(s), {os.cpu_count()} CPUs): {total:.1f} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
