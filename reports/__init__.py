"""Reports for ilstudy studies: Parquet results → fits with bootstrap CIs → figures + summary.

Imports neither Ray nor torch; submodules load on first use, so ``import reports`` is cheap.
Command line: ``python -m reports STUDY_DIR [STUDY_DIR ...] [--out DIR] [--format png,pdf]``.

Library use::

    import reports
    metrics = reports.load("studies/k_sweep")          # one row per (trial, step)
    trials = reports.load_trials("studies/k_sweep")    # one row per trial: status, final metrics
    fits = reports.fit_feature_updates(trials)         # levels, N50, N90, slope with CIs, or why not
    reports.plot_feature_updates(trials, "fig1", fits, formats=("pdf",))
    tuning = reports.tune_on_validation(trials)        # lr per K chosen on val_acc (None: no sweep)
    reports.plot_lr(trials, "lr")                      # accuracy, loss, gap against lr per K
    phases = reports.read_phases(["studies/k_sweep"], trials)  # per feature update (new studies)
    per_trial = reports.trial_stability(metrics, trials, phases)  # diverged trials classified
    reports.stability_table(per_trial)                 # per (K, lr): trained, diverged, lr·λ, gaps
    reports.arms_table(trials)                         # Fig. 8: each arm at its selected lr
    reports.write_report("studies/k_sweep")            # everything, into studies/k_sweep/report/
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._errors import NothingToPlot, ReportError

if TYPE_CHECKING:
    from ._fit import fit_feature_updates, n_at_fraction, sigmoid_model
    from ._load import load, load_trials
    from ._plot_arms import arms_table, plot_arms
    from ._plot_curves import plot_training_curves
    from ._plot_matched import plot_matched_train_loss
    from ._plot_measure import measure_correlations, plot_measure
    from ._plot_phase import plot_phase_diagram
    from ._plot_stability import plot_stability, plot_stability_map
    from ._plot_sweep import plot_damping, plot_lr
    from ._plot_updates import plot_feature_updates
    from ._report import ReportResult, default_out, write_report
    from ._stability import classify, read_phases, stability_table, trial_stability
    from ._summary import final_metrics
    from ._tune import tune_on_validation

_LAZY = {
    "fit_feature_updates": "_fit",
    "n_at_fraction": "_fit",
    "sigmoid_model": "_fit",
    "load": "_load",
    "load_trials": "_load",
    "plot_training_curves": "_plot_curves",
    "plot_damping": "_plot_sweep",
    "plot_lr": "_plot_sweep",
    "plot_matched_train_loss": "_plot_matched",
    "tune_on_validation": "_tune",
    "measure_correlations": "_plot_measure",
    "plot_measure": "_plot_measure",
    "plot_phase_diagram": "_plot_phase",
    "plot_feature_updates": "_plot_updates",
    "ReportResult": "_report",
    "default_out": "_report",
    "write_report": "_report",
    "final_metrics": "_summary",
    "arms_table": "_plot_arms",
    "plot_arms": "_plot_arms",
    "plot_stability": "_plot_stability",
    "plot_stability_map": "_plot_stability",
    "classify": "_stability",
    "read_phases": "_stability",
    "stability_table": "_stability",
    "trial_stability": "_stability",
}

__all__ = [
    "NothingToPlot",
    "ReportError",
    "ReportResult",
    "arms_table",
    "classify",
    "default_out",
    "final_metrics",
    "fit_feature_updates",
    "load",
    "load_trials",
    "measure_correlations",
    "n_at_fraction",
    "plot_arms",
    "plot_damping",
    "plot_feature_updates",
    "plot_lr",
    "plot_matched_train_loss",
    "plot_measure",
    "plot_phase_diagram",
    "plot_stability",
    "plot_stability_map",
    "plot_training_curves",
    "read_phases",
    "sigmoid_model",
    "stability_table",
    "trial_stability",
    "tune_on_validation",
    "write_report",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'reports' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
