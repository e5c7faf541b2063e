"""Old path of the adaptive searcher, kept so that a study started before the move resumes:
Tune pickles the searcher (`study.adaptive.AdaptiveSearcher`, holding a `Planner` with its
`Options`, `Proposal`s and `Decision`s) into the study folder by module path.

New code imports `study.plan.adaptive_fit`, `study.plan.adaptive_planner` and
`study.execute.adaptive_searcher`.
"""

from __future__ import annotations

from typing import Any

from study.execute import adaptive_searcher
from study.plan.adaptive_planner import Decision, Options, Planner, Proposal

__all__ = ["Decision", "Options", "Planner", "Proposal"]


def __getattr__(name: str) -> Any:
    if name == "AdaptiveSearcher":  # built on first use there, so that Ray is imported late
        return adaptive_searcher.AdaptiveSearcher
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
