"""Old path of `study.execute.asha.CellASHA`, kept so that a study started before the move
resumes: Tune pickles the scheduler into the study's `tuner.pkl` by module path."""

from study.execute.asha import CellASHA

__all__ = ["CellASHA"]
