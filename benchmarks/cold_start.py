"""Claim: what a fresh trial process (a new Ray actor) pays before and during its first trial,
beside the same trial in a warm process.

Every study's first trial on each actor runs in a fresh Python process: it imports torch and
the trainers, builds its Trial and runs. Each round starts one fresh process that times those
phases, then times the same trial here (warm: everything imported, caches filled); medians over
rounds. It also names the heavy modules the fresh process ended up importing: torch._dynamo
(which every torch.optim class and FlopCounterMode import on first use: the trainers call
torch.optim's functional kernels instead, and Gauss-Newton counts FLOPs from layer shapes) and
sympy (torch.autograd.grad with a tensor grad_outputs imports it, through torch.fx's symbolic
shapes: plain and linearised trials take one scalar backward instead; Gauss-Newton's batched
and CG VJPs still use grad_outputs, where it is faster).

Evidence (2 shared cores; the same benchmark run in a checkout of b01b190 beside this one): a
fresh process start to exit 3.47 s → 3.03 s, its first trial's records 0.97 → 0.67 s against
0.61-0.63 s warm (sympy no longer imported).

Run:   python -m benchmarks.cold_start [--rounds 5] [--steps 400] [--trainer T] [--smoke]
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence

from benchmarks import _common as C

CHILD = """
import json, sys, time
t0 = time.perf_counter()
import torch
torch.set_num_threads(1)
from trainables import Trial
t1 = time.perf_counter()
trial = Trial(json.loads(sys.argv[1]), "cpu")
t2 = time.perf_counter()
list(trial.records())
t3 = time.perf_counter()
print(json.dumps({"imports": t1 - t0, "build": t2 - t1, "run": t3 - t2,
                  "dynamo": "torch._dynamo" in sys.modules, "sympy": "sympy" in sys.modules}))
"""


def main(argv: Sequence[str] | None = None) -> None:
    p = C.parser(__doc__)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--trainer", choices=("linearised", "plain", "gauss_newton"),
                   default="linearised", help="linearised runs with K=4")  # fmt: skip
    args = p.parse_args(argv)
    args.threads = args.threads or 1
    if args.smoke:
        args.steps = 20
    device = C.setup(args)
    if device.type != "cpu":
        raise SystemExit("--device: cold_start measures CPU trial processes only")
    from trainables import Trial

    config = {"trainer": args.trainer, "total_steps": args.steps,
              "eval_every": max(1, args.steps // 10)}  # fmt: skip
    if args.trainer == "linearised":
        config["k"] = 4
    list(Trial(config, device).records())  # warm this process
    cold, warm = [], []
    for _ in range(args.rounds or (1 if args.smoke else 5)):
        t = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(config)],
                              capture_output=True, text=True, check=True)  # fmt: skip
        cold.append({**json.loads(done.stdout), "process": time.perf_counter() - t})
        t = time.perf_counter()
        list(Trial(config, device).records())
        warm.append(time.perf_counter() - t)

    def med(key: str) -> float:
        return statistics.median(c[key] for c in cold)

    warm_s = statistics.median(warm)
    what = "linearised K=4" if args.trainer == "linearised" else args.trainer
    print(f"# {what} trial of {args.steps} steps on digits; {len(cold)} round(s)")
    rows = [
        ["fresh process: start to exit", med("process")],
        ["  import torch and the trainers", med("imports")],
        ["  Trial() (data, model, optimiser)", med("build")],
        ["  the trial's records", med("run")],
        ["warm process: the same trial's records", warm_s],
    ]
    print(C.table(["what", "wall s"], rows))
    print(
        f"\nratio fresh process (start to exit) / the same trial warm: {med('process') / warm_s:.2f}"
    )
    print(f"ratio first trial's records fresh / warm (lazy imports, first-call costs): "
          f"{med('run') / warm_s:.2f}")  # fmt: skip
    heavy = [m for m in ("dynamo", "sympy") if any(c[m] for c in cold)]
    print(f"heavy modules the fresh process imported: {', '.join(heavy) or 'none'}")


if __name__ == "__main__":
    main()
