"""A few tiny trials that finish in seconds: for tests and first contact."""

from __future__ import annotations

from search_spaces.space import Space

SPACE = Space(
    name="smoke",
    description="4 tiny IL trials (40 steps, K in {1,4,16,inf}) that finish in seconds",
    fixed={
        "trainer": "linearised",
        "optimizer": "sgd",
        "total_steps": 40,
        "eval_every": 10,
        "seed": 0,
    },
    grid={"k": [1, 4, 16, "inf"]},
    smoke={},
)
