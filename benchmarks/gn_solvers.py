"""Claim: `solver=auto` is within 1.2× of the faster of exact and CG at every damping λ in
1e-6 … 1e3 and every batch size on the grid; the table documents where CG overtakes exact.

For each model, batch size n and λ, the exact kernel-form solve, CG and auto run interleaved on
the same batch and parameters (at init, or after --trained-steps of plain SGD), and the table
gives their median times, CG's iterations against the law auto predicts them with, how far the
two directions agree, what auto picked and its time over the faster one's. The calibration
lines compare the cost model's predictions (gn_cost.solver_costs) with the measured times:
on a new kind of device, scale gn_cost.DEVICE_RATES by them.

Run:   python -m benchmarks.gn_solvers [--device cuda] [--models mlp,cnn] [--loss mse]
                                       [--trained-steps 200] [--smoke]

Before this work (same machine): exact materialised J by vmap(jacrev) and formed J Jᵀ, 0.33 s
per step at n=64 on the MLP against CG's 0.034 s at λ=1, and auto picked exact whenever
n·c ≤ 4096. Now the MLP's kernel comes from per-layer factors (15-22 ms at n=64), CNN Jacobians
from unfolded patches (exact at n=32: 1.7 → 1.2-1.3 s), and auto weighs predicted costs.

Evidence (1 thread, digits, cross-entropy, after 200 SGD steps, 30 cells; CNN channels-last):
auto picked the faster solver in 29 of 30 cells (the other: 1.05×, MLP n=16 λ=1e3). Auto as a
trial calls it (with its SolverMemory: a probe every 50 steps) over the faster solver: worst
1.13 (MLP n=256 λ=1e-4), target ≤ 1.2 met; cold auto (a probe at every call): worst 1.18
(MLP n=64 λ=1: exact plus the probe), median 0.99. Before the memory, one run's cold worst was
1.24. Crossover, CG faster from: MLP n=16 λ ≈ 1e3, n=64 λ ≈ 1e2, n=256 λ ≈ 1e-2; CNN n=8
λ ≈ 1e-2, n=32 λ ≈ 1e-4. At λ ≤ 1e-4 on the trained MLP CG stops at cg_max_iter=500 short of
tol (directions 1-95% off exact): exact is the accurate choice there too.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import torch

from benchmarks import _common as C
from benchmarks._trials import make_trial
from trainables.gauss_newton import SolverMemory, gauss_newton_direction
from trainables.gn_cost import choose_solver, predicted_cg_iterations, solver_costs
from trainables.jacobian import flatten

TARGET = 1.2  # auto's time / the faster solver's
DAMPINGS = [1e-6, 1e-4, 1e-2, 1.0, 1e2, 1e3]


def state(model: str, loss: str, trained_steps: int, device: torch.device, smoke: bool):
    """A model and parameters: at init, or after some plain SGD steps on the training set."""
    cfg = dict(model=model, loss=loss, trainer="plain", probe_size=0, total_steps=10_000,
               lr=0.05 if loss == "cross_entropy" else 0.02)  # fmt: skip
    if smoke and model == "cnn":
        cfg["channels"] = 4
    trial = make_trial(cfg, device)
    for _ in range(trained_steps):
        trial.advance()
    return trial


def main(argv: Sequence[str] | None = None) -> None:
    p = C.parser(__doc__)
    p.add_argument("--models", default="mlp,cnn")
    p.add_argument("--loss", default="cross_entropy", choices=["cross_entropy", "mse"])
    p.add_argument("--mlp-batches", default="16,64,256")
    p.add_argument("--cnn-batches", default="8,32")
    p.add_argument("--trained-steps", type=int, default=200, help="0: at initialisation")
    args = p.parse_args(argv)
    if args.threads is None and args.device == "cpu":
        args.threads = 1  # the cost model's CPU rates are per core; Ray trials get one each
    if args.smoke:
        args.models, args.trained_steps = "mlp", 0
    device = C.setup(args)
    dampings = [1e-2, 1e2] if args.smoke else DAMPINGS
    clock = "wall" if device.type == "cuda" else "cpu"
    worst, worst_trial, choices, calib_exact, calib_iter, summary = [], [], [], [], [], []
    for model in args.models.split(","):
        trial = state(model, args.loss, args.trained_steps, device, args.smoke)
        params = {k: v.detach() for k, v in trial.theta.items()}
        batches = [8] if args.smoke else [int(v) for v in getattr(args, f"{model}_batches").split(",")]  # fmt: skip
        rounds = args.rounds or (1 if args.smoke else 5 if model == "mlp" else 2)
        rows = []
        for n in batches:
            x, y = trial.data.x_train[:n], trial.data.y_train[:n]
            c = trial.data.num_classes
            costs = solver_costs(trial.model, params, x, c, args.loss)
            crossover = None
            for lam in dampings:
                out: dict[str, tuple] = {}

                def run(kind: str, lam=lam, x=x, y=y, out=out, model_=trial.model, params=params):
                    # "trial": auto as a trial calls it, step after step with its SolverMemory
                    memory = SolverMemory() if kind == "trial" else None
                    solver = "auto" if kind == "trial" else kind

                    def call() -> None:
                        out[kind] = gauss_newton_direction(
                            model_, params, x, y, args.loss, lam, solver=solver, memory=memory
                        )

                    return call

                fns = {k: run(k) for k in ("exact", "cg", "auto", "trial")}
                reps = 1
                if not args.smoke:  # blocks of ≥ 50 ms: less noise
                    first = C.interleaved(fns, 1, 1, device, warmup=0)  # also warms up
                    reps = max(1, min(20, round(0.05 / min(first.median(k, "wall") for k in fns))))
                t = C.interleaved(fns, rounds, reps, device, warmup=0)
                d_exact, d_cg = flatten(out["exact"][0]), flatten(out["cg"][0])
                info_cg, info_auto = out["cg"][2], out["auto"][2]
                t_exact, t_cg, t_auto, t_trial = (
                    t.median(k, clock) for k in ("exact", "cg", "auto", "trial")
                )
                faster = "exact" if t_exact < t_cg else "cg"
                ratio = t_auto / min(t_exact, t_cg)
                in_trial = t_trial / min(t_exact, t_cg)
                # the choice alone: the picked solver's own column over the faster one's
                choice = (t_exact if info_auto.solver == "exact" else t_cg) / min(t_exact, t_cg)
                worst.append((ratio, model, n, lam))
                worst_trial.append((in_trial, model, n, lam))
                choices.append((choice, info_auto.solver == faster))
                if faster == "cg" and crossover is None:
                    crossover = lam
                rayleigh = _rayleigh(trial.model, params, x, y, args.loss)
                law = predicted_cg_iterations(lam, rayleigh, 1e-6, 500, costs.law)
                calib_exact.append(t_exact / costs.exact_s)
                calib_iter.append(t_cg / max(info_cg.cg_iters + 1.5, 1) / costs.iteration_s)
                agree = float((d_exact - d_cg).norm() / d_exact.norm().clamp_min(1e-30))
                rows.append([
                    model, n, f"{lam:.0e}", 1e3 * t_exact, 1e3 * t_cg, info_cg.cg_iters, round(law),
                    agree, info_auto.solver, faster, choice, 1e3 * t_auto, ratio, in_trial,
                ])  # fmt: skip
            where = (
                f"CG faster from λ ≈ {crossover:.0e}" if crossover else "exact faster at every λ"
            )
            summary.append(f"crossover {model} n={n} (n·c={n * c}): {where}")
        print(f"\n## {model}, {args.loss}, after {args.trained_steps} SGD steps: {rounds} rounds")
        print(C.table(
            ["model", "n", "λ", "exact ms", "cg ms", "cg iters", "law iters", "‖Δd‖/‖d‖",
             "auto picked", "faster", "pick × faster", "auto ms", "auto × faster",
             "in trial × faster"],
            rows,
        ))  # fmt: skip
    print()
    print("\n".join(summary))
    r, model, n, lam = max(worst_trial)
    ok = "met" if r <= TARGET else "MISSED"
    print(f"ratio auto as a trial calls it (SolverMemory) / faster solver, worst cell "
          f"({model} n={n} λ={lam:.0e}): {r:.2f} (target ≤ {TARGET}: {ok})")  # fmt: skip
    r, model, n, lam = max(worst)
    print(f"ratio auto cold (a probe at every call) / faster solver, worst cell "
          f"({model} n={n} λ={lam:.0e}): {r:.2f}")  # fmt: skip
    print(f"ratio auto / faster solver, median over cells: {statistics.median(w[0] for w in worst):.2f}")  # fmt: skip
    right = sum(ok for _, ok in choices)
    print(f"ratio picked solver / faster solver (the choice alone, from the two columns), worst: "
          f"{max(c for c, _ in choices):.2f}; auto picked the faster in {right} of {len(choices)} cells")  # fmt: skip
    print(f"calibration measured / predicted: exact {statistics.median(calib_exact):.2f}, "
          f"CG iteration {statistics.median(calib_iter):.2f}")  # fmt: skip
    _ = choose_solver  # the rule lives in trainables.gn_cost.choose_solver


def _rayleigh(model, params, x, y, loss) -> float:
    """q = bᵀGb/bᵀb at the gradient b, the quantity auto's iteration law uses."""
    from trainables.gauss_newton import _CGStart
    from trainables.linearise import output_grad

    with torch.no_grad():
        out = model(x)
    return _CGStart(
        model, params, x, out, output_grad(loss, out, y), loss, 1.0, "absolute"
    ).rayleigh


if __name__ == "__main__":
    main()
