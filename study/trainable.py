"""Old path of the trainable adapter, kept so that a study started before the move resumes:
Tune pickles the study's trainable into `tuner.pkl`, and it refers to `_run_trial` and
`AdapterSettings` here by module path."""

from study.execute.trainable import AdapterSettings, _run_trial, make_trainable

__all__ = ["AdapterSettings", "_run_trial", "make_trainable"]
