"""Damped Gauss-Newton with the damping λ over nine orders of magnitude."""

from __future__ import annotations

from search_spaces.space import Space

SPACE = Space(
    name="damping_sweep",
    description="Gauss-Newton with damping on a log grid 1e-6..1e3: where generalisation jumps",
    fixed={
        "trainer": "gauss_newton",
        "lr": 1.0,  # the full GN step η=1: small λ diverges, mid λ generalises, large λ crawls
        "batch_size": 64,  # n·c = 640 outputs per exact kernel-form solve
        "total_steps": 200,
        "eval_every": 20,
        "seed": 0,
    },
    grid={
        "damping": [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3],  # λ
    },
    seconds_per_trial=1.4,  # measured: mean trial wall_s, 2 at once on 2 cores
    smoke={"total_steps": 4, "eval_every": 2, "batch_size": 16, "damping": [1e-3, 1e2]},
)
