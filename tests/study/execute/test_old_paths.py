"""A study started before study/ was laid out by stage still resumes: Tune pickled its
trainable, callbacks, scheduler and searcher into the study folder by module path, so each old
path still names the very object the new one does (pickle finds them by name)."""

from __future__ import annotations

import importlib
import pickle

import pytest

MOVED = [  # (old module, new module, name) of everything Tune pickles
    ("study.trainable", "study.execute.trainable", "_run_trial"),
    ("study.trainable", "study.execute.trainable", "AdapterSettings"),
    ("study.writer", "study.execute.writer", "TrialsWriter"),
    ("study.progress", "study.execute.progress", "ProgressLine"),
    ("study.asha", "study.execute.asha", "CellASHA"),
    ("study.adaptive", "study.execute.adaptive_searcher", "AdaptiveSearcher"),
    ("study.adaptive", "study.plan.adaptive_planner", "Planner"),
    ("study.adaptive", "study.plan.adaptive_planner", "Options"),
    ("study.adaptive", "study.plan.adaptive_planner", "Proposal"),
    ("study.adaptive", "study.plan.adaptive_planner", "Decision"),
    ("study.results", "study.store.layout", "Status"),
]


@pytest.mark.parametrize(("old", "new", "name"), MOVED, ids=lambda v: str(v))
def test_an_old_module_path_names_the_moved_object(old: str, new: str, name: str) -> None:
    moved = getattr(importlib.import_module(new), name)
    assert getattr(importlib.import_module(old), name) is moved


def test_a_pickle_written_with_the_old_paths_loads() -> None:
    """Protocol-0 pickles name a global as `c<module>\\n<name>\\n`: written by hand, as the old
    code wrote them, without importing the old modules first."""
    from study.plan.adaptive_planner import Planner
    from study.store.layout import Status

    for module, name, expected in [
        ("study.results", "Status", Status),
        ("study.adaptive", "Planner", Planner),
    ]:
        assert pickle.loads(f"c{module}\n{name}\n.".encode()) is expected
