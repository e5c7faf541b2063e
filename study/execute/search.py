"""A plan becomes Tune's param space and search algorithm."""

from __future__ import annotations

import logging
from typing import Any

from study import plan as plan_package
from study.execute.adaptive_searcher import make_searcher
from study.plan import Plan


def param_space(plan: Plan) -> dict[str, Any]:
    """Tune's param_space: fixed values plus grid_search / choice / distributions."""
    from ray import tune  # on use: study.plan registers these builders without Ray

    make = {
        "fixed": lambda value: value,
        "grid": lambda values: tune.grid_search(values),
        "choice": lambda values: tune.choice(values),
        "uniform": tune.uniform,
        "loguniform": tune.loguniform,
    }
    return {key: make[kind](*args) for key, (kind, *args) in plan.sweep().items()}


def search_alg(plan: Plan, max_concurrent: int = 0) -> Any:
    """The grid (with its reference arms first), a seeded random, Optuna or adaptive searcher.

    Tune applies `max_concurrent_trials` to a `Searcher` only, so the variant generators of
    grid and random search get the limit here.
    """
    from ray.tune.search import BasicVariantGenerator

    if plan.searcher == "grid":
        points = plan.space.reference_points()
        if not points:
            return None
        _quiet_preset_warnings()
        return BasicVariantGenerator(points_to_evaluate=points, max_concurrent=max_concurrent)
    if plan.searcher == "random":
        return BasicVariantGenerator(random_state=0, max_concurrent=max_concurrent)
    if plan.searcher == "adaptive":
        return make_searcher(plan)
    from ray.tune.search.optuna import OptunaSearch

    return OptunaSearch(seed=0)  # metric and mode are set once, in TuneConfig


def _quiet_preset_warnings() -> None:
    """A reference arm overrides fixed keys on purpose; Tune would warn once per trial."""
    logging.getLogger("ray.tune.search.variant_generator").setLevel(logging.ERROR)


plan_package._TUNE.update(param_space=param_space, search_alg=search_alg)
