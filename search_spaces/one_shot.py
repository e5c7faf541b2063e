"""One-shot linearisation: train the network for t steps, then linearise once (Fort et al.)."""

from __future__ import annotations

from search_spaces.space import Space

SPACE = Space(
    name="one_shot",
    description="SGD for t steps, then one linearisation for the rest of T (parent/child)",
    fixed={
        "trainer": "linearised",
        "schedule": "one_shot",
        "optimizer": "sgd",
        "total_steps": 2000,
        "eval_every": 100,
    },
    grid={
        # t: steps of ordinary SGD before linearising; t = T is plain training, the reference
        "one_shot_at": [0, 10, 100, 500, 1000, 2000],
        "seed": [0, 1],
    },
    smoke={"total_steps": 40, "eval_every": 10, "one_shot_at": [0, 20], "seed": [0]},
)
