"""`--space NAME|FILE` becomes a Space, and its default trial budget."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import search_spaces
from search_spaces import Space, from_file
from study.errors import StudyError


def get_space(name: str, stored: Mapping[str, Any] | None = None) -> Space:
    """A built-in space by name, a space file (`--space path.toml`), or a study's stored copy
    of a file's space (`stored`, from its study.json: a resume needs the file no more)."""
    try:
        if stored is not None:
            return from_file.from_definition(stored, f"the space stored for {name!r}")
        if from_file.is_space_file(name):
            return from_file.load(name)
        return search_spaces.get(name)
    except from_file.SpaceFileError as exc:
        raise StudyError(str(exc)) from None
    except KeyError:
        raise StudyError(
            f"unknown space {name!r}; allowed: {', '.join(search_spaces.names())} (see --list), "
            "or a space file ending in .toml"
        ) from None


def default_num_samples(space: Space, searcher: str) -> int:
    """grid: one pass; random/optuna/adaptive: the space's sample count, or its grid size."""
    if searcher == "grid":
        return 1
    return space.num_samples if space.searcher != "grid" else space.grid_size()
