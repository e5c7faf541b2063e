"""Old path of `study.execute.progress.ProgressLine`, kept so that a study started before the
move resumes: Tune pickles its callbacks into the study's `tuner.pkl` by module path."""

from study.execute.progress import ProgressLine

__all__ = ["ProgressLine"]
