"""Damped Gauss-Newton with the damping λ over nine orders of magnitude, the step η with it.

At λ ≫ ‖G‖ a GN step is an SGD step of size η/λ: with η fixed at 1 the large-λ side is only
under-trained. So η is swept jointly with λ; the report picks η per λ on validation accuracy.
"""

from __future__ import annotations

from search_spaces.space import Space

SPACE = Space(
    name="damping_sweep",
    description="Gauss-Newton, damping on a log grid 1e-6..1e3 x step 0.1..10: where generalisation jumps",
    fixed={
        "trainer": "gauss_newton",
        "batch_size": 64,  # n·c = 640 outputs per exact kernel-form solve
        "total_steps": 200,
        "eval_every": 20,
        "seed": 0,
    },
    grid={
        "damping": [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3],  # λ
        "lr": [0.1, 1.0, 10.0],  # η: 1 is the full GN step (docstring)
    },
    smoke={
        "total_steps": 4,
        "eval_every": 2,
        "batch_size": 16,
        "damping": [1e-3, 1e2],
        "lr": [1.0],
    },
)
