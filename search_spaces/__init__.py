"""Named search spaces: one data-only module per space, plus a registry."""

from __future__ import annotations

from search_spaces.registry import all_spaces, get, names
from search_spaces.space import SEARCHERS, Choice, Distribution, LogUniform, Space, Uniform

__all__ = [
    "SEARCHERS",
    "Choice",
    "Distribution",
    "LogUniform",
    "Space",
    "Uniform",
    "all_spaces",
    "get",
    "names",
]
