"""The Tune Searcher around the adaptive `Planner` (study.plan.adaptive_planner), and the
planner state it saves in the study folder."""

from __future__ import annotations

import pickle
from typing import Any

from study.plan import Plan
from study.plan.adaptive_planner import FINISHED, Options, Planner, check_space


# ---- Ray Tune -------------------------------------------------------------------------------
def _searcher_class() -> type:
    """AdaptiveSearcher, built on first use: importing this module does not import Ray."""
    from ray.tune.search import Searcher

    class AdaptiveSearcher(Searcher):
        """A Tune Searcher around a `Planner`: suggests {"k", "seed"}, reads the metric on
        completion. Metric and mode come from TuneConfig (set once there: Tune refuses both)."""

        def __init__(self, total_steps: int, options: Options | None = None) -> None:
            super().__init__()
            self.planner = Planner(total_steps, options or Options())
            self.trial_index: dict[str, int] = {}

        def set_search_properties(
            self, metric: str | None, mode: str | None, config: dict, **spec: Any
        ) -> bool:
            """Take metric and mode; the config's choice over k and seed is ours to fill in."""
            if metric:
                self._metric = metric
            if mode:
                self._mode = mode
            return True

        def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
            if trial_id in self.trial_index:  # asked again for a trial already placed
                p = self.planner.proposals[self.trial_index[trial_id]]
                return {"k": p.k, "seed": p.seed}
            proposal = self.planner.next()
            if proposal == FINISHED:
                return Searcher.FINISHED
            if proposal is None:
                return None
            self.trial_index[trial_id] = len(self.planner.proposals) - 1
            k, seed = proposal
            return {"k": k, "seed": seed}

        def on_trial_complete(
            self, trial_id: str, result: dict | None = None, error: bool = False
        ) -> None:
            index = self.trial_index.get(trial_id)
            if index is None:
                return
            value = None
            if result and not error and not result.get("diverged"):
                raw = result.get(self.metric)
                value = float(raw) if isinstance(raw, int | float) else None
            self.planner.record(index, value)

        def get_state(self) -> dict[str, Any]:
            return {"planner": self.planner.state(), "trial_index": dict(self.trial_index),
                    "metric": self._metric, "mode": self._mode}  # fmt: skip

        def set_state(self, state: dict[str, Any]) -> None:
            self.planner = Planner.from_state(state["planner"])
            self.trial_index = dict(state["trial_index"])
            self._metric, self._mode = state["metric"], state["mode"]

        def save(self, checkpoint_path: str) -> None:
            with open(checkpoint_path, "wb") as f:
                pickle.dump(self.get_state(), f)

        def restore(self, checkpoint_path: str) -> None:
            with open(checkpoint_path, "rb") as f:
                self.set_state(pickle.load(f))

    AdaptiveSearcher.__module__ = __name__
    AdaptiveSearcher.__qualname__ = "AdaptiveSearcher"  # pickle finds it through __getattr__
    return AdaptiveSearcher


def __getattr__(name: str) -> Any:
    if name == "AdaptiveSearcher":  # only called while the class is not yet in globals()
        cls = globals()["AdaptiveSearcher"] = _searcher_class()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def stopped_at(fs: Any, experiment: str) -> int | None:
    """Trials an adaptive study will have when its searcher stopped before `num_samples`
    (from the searcher states Tune saved in the experiment folder); None otherwise.
    The service's exit code counts a study as finished at this many trials."""
    planner = saved_planner(fs, experiment)
    return len(planner["proposals"]) if planner and planner.get("finished") else None


def saved_planner(fs: Any, experiment: str) -> dict[str, Any] | None:
    """The latest saved planner state of a study, or None. Chosen by content, the one with the
    most proposals (a study's state only grows): a resumed driver's file can carry an older
    mtime than the previous session's (the same reason the study picks Tune snapshots by content, not name)."""
    import pyarrow.fs as pafs

    infos = fs.get_file_info(pafs.FileSelector(experiment, allow_not_found=True))
    best: dict[str, Any] | None = None
    for info in infos:
        if not (info.base_name.startswith("searcher-state-") and info.base_name.endswith(".pkl")):
            continue
        try:
            with fs.open_input_file(info.path) as f:
                planner = pickle.loads(f.read())["planner"]
        except (OSError, pickle.UnpicklingError, KeyError, TypeError, EOFError):
            continue  # a damaged or foreign file says nothing about the study
        if best is None or len(planner["proposals"]) > len(best["proposals"]):
            best = planner
    return best


def make_searcher(plan: Plan) -> Any:
    """The adaptive searcher (`AdaptiveSearcher`) for a plan (`study.plan.Plan`); StudyError if
    the space does not fit it."""
    total_steps, options = check_space(plan.space)
    cls = globals().get("AdaptiveSearcher") or __getattr__("AdaptiveSearcher")
    return cls(total_steps, options)
