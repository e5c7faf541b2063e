"""The registry of named spaces: `names()`, `get(name)`, `all_spaces()`."""

from __future__ import annotations

import importlib

from search_spaces.space import Space

# Module names under search_spaces/, one space each; order is the order `--list` shows.
_MODULES = (
    "k_sweep",
    "k_adaptive",
    "phase_diagram",
    "lr_sweep",
    "damping_sweep",
    "one_shot",
    "optuna_lr_k",
    "fig8_cpu",
    "paper_cifar10",
    "paper_fig8",
    "paper_fig9",
    "smoke",
)


def names() -> tuple[str, ...]:
    """Every registered space name."""
    return _MODULES


def get(name: str) -> Space:
    """The space called `name`; KeyError naming the allowed names otherwise."""
    if name not in _MODULES:
        raise KeyError(f"unknown space {name!r}; allowed: {', '.join(_MODULES)}")
    space = importlib.import_module(f"search_spaces.{name}").SPACE
    assert space.name == name, f"search_spaces/{name}.py defines a space named {space.name!r}"
    return space


def all_spaces() -> list[Space]:
    """Every registered space, in `--list` order."""
    return [get(name) for name in _MODULES]
