"""Run every CPU benchmark's smoke mode in one process: python -m benchmarks [--smoke].

One interpreter, one torch import: what tests/test_benchmarks_smoke.py runs. Full runs go
through each module (python -m benchmarks.step_cost …); the study one needs Ray and runs alone.
"""

from __future__ import annotations

import sys

from benchmarks import (
    adaptive_k,
    adaptive_real,
    cold_start,
    gn_solvers,
    measure_cost,
    report_load,
    report_stability,
    stability_cost,
    step_cost,
)

SMOKE = {
    "step_cost": step_cost.main,
    "gn_solvers": gn_solvers.main,
    "measure_cost": measure_cost.main,
    "stability_cost": stability_cost.main,
    "cold_start": cold_start.main,
    "adaptive_k": adaptive_k.main,
    "adaptive_real": adaptive_real.main,
    "report_load": report_load.main,
    "report_stability": report_stability.main,
}


def main() -> int:
    failed = []
    for name, run in SMOKE.items():
        print(f"\n######## benchmarks.{name} --smoke", flush=True)
        try:
            run(["--smoke"])
        except SystemExit as exc:  # a benchmark's own clear failure
            if exc.code not in (None, 0):
                print(f"benchmarks.{name}: {exc}", file=sys.stderr)
                failed.append(name)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
