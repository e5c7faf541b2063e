"""Damped Gauss-Newton with the damping λ over nine orders of magnitude."""

from __future__ import annotations

from search_spaces.space import Space

SPACE = Space(
    name="damping_sweep",
    description="Gauss-Newton with damping on a log grid 1e-6..1e3: where generalisation jumps",
    fixed={
        "trainer": "gauss_newton",
        "lr": 1.0,  # GN step size η
        "total_steps": 100,
        "eval_every": 10,
        "seed": 0,
    },
    grid={
        "damping": [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3],  # λ
    },
    seconds_per_trial=5.0,
    smoke={"total_steps": 5, "eval_every": 5, "damping": [1e-3, 1e2]},
)
