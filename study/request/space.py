"""`--space NAME|FILE` (or a `Space` from Python) becomes a Space; the definition a study
stores of it; and its default trial budget."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import search_spaces
from search_spaces import Space, from_file
from study.errors import StudyInputError

# Where a study's space came from (StudySpec.space_source).
BUILTIN, FILE, PYTHON = "builtin", "file", "python"
# Space fields a space file cannot hold; a built-in's definition carries them beside the file's.
_EXTRA = {"searcher_options": {}, "trainable": Space.__dataclass_fields__["trainable"].default}
# Fields that do not shape a space's trials: a renamed or re-described space is the same.
COSMETIC = ("name", "description", "seconds_per_trial")


def source_of(given: str | Space) -> str:
    """builtin, file or python: what `--space` (or run_study's `space`) names."""
    if isinstance(given, Space):
        return PYTHON
    return FILE if from_file.is_space_file(given) else BUILTIN


def get_space(name: str | Space, stored: Mapping[str, Any] | None = None) -> Space:
    """A built-in space by name, a space file (`--space path.toml`), a `Space` from Python
    (validated as a file's would be), or a study's stored copy of its space (`stored`, from its
    study.json: a resume needs neither the file nor an unchanged built-in)."""
    try:
        if stored is not None:
            return from_definition(stored, f"the space stored for {_label(name)!r}")
        if isinstance(name, Space):
            return from_definition(definition(name), f"space {name.name!r}")
        if from_file.is_space_file(name):
            return from_file.load(name)
        return search_spaces.get(name)
    except from_file.SpaceFileError as exc:
        raise StudyInputError(str(exc)) from None
    except KeyError:
        raise StudyInputError(
            f"unknown space {name!r}; allowed: {', '.join(search_spaces.names())} (see --list), "
            "or a space file ending in .toml"
        ) from None


def _label(name: str | Space) -> str:
    return name.name if isinstance(name, Space) else name


def definition(space: Space) -> dict[str, Any]:
    """The space as plain JSON values, for study.json: a space file's own fields, plus the
    searcher options and trainable a built-in may set (only when not the defaults, so a file's
    definition is what it always was)."""
    out = from_file.definition(space)
    for key, default in _EXTRA.items():
        value = getattr(space, key)
        if value != default:
            out[key] = dict(value) if isinstance(value, Mapping) else value
    return out


def from_definition(payload: Mapping[str, Any], where: str) -> Space:
    """The Space a stored definition describes (SpaceFileError if it is not a valid one)."""
    if not isinstance(payload, Mapping):
        raise from_file.SpaceFileError(f"{where}: not a table of space fields")
    extra = {k: payload[k] for k in _EXTRA if k in payload}
    space = from_file.from_definition({k: v for k, v in payload.items() if k not in _EXTRA}, where)
    return replace(space, **extra) if extra else space


def differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """What differs between two definitions that shapes trials, as `key: saved -> current`.
    Both are compared as JSON values (a tuple and the list study.json stores are the same)."""
    saved, current = _json(saved), _json(current)
    keys = [k for k in from_file.differences(saved, current) if k.split(".")[0] not in COSMETIC]
    keys += [k for k in _EXTRA if saved.get(k, _EXTRA[k]) != current.get(k, _EXTRA[k])]
    return [f"{key}: {_at(saved, key)} -> {_at(current, key)}" for key in keys]


def _json(value: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(value, default=str))


def _at(definition: Mapping[str, Any], key: str) -> str:
    head, _, tail = key.partition(".")
    value = definition.get(head)
    if tail:
        value = value.get(tail) if isinstance(value, Mapping) else None
    return "(none)" if value is None else str(value)


def default_num_samples(space: Space, searcher: str) -> int:
    """grid: one pass; random/optuna/adaptive: the space's sample count, or its grid size."""
    if searcher == "grid":
        return 1
    return space.num_samples if space.searcher != "grid" else space.grid_size()
