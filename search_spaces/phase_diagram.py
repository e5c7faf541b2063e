"""Phase diagram: test accuracy over total steps T x steps between feature updates K."""

from __future__ import annotations

from search_spaces.space import Space

SPACE = Space(
    name="phase_diagram",
    description="IL test accuracy over a grid of total steps T x K (reviewers' phase diagram)",
    fixed={
        "trainer": "linearised",
        "optimizer": "sgd",
        "eval_every": 250,  # steps between records
        "seed": 0,
    },
    grid={
        "total_steps": [250, 500, 1000, 2000],  # T
        "k": [1, 4, 16, 64, 200, "inf"],  # every finite K < the smallest T: K >= T is ∞
    },
    smoke={"total_steps": [20, 40], "k": [1, "inf"], "eval_every": 10},
)
