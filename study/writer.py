"""Old path of `study.execute.writer.TrialsWriter`, kept so that a study started before the
move resumes: Tune pickles its callbacks into the study's `tuner.pkl` by module path."""

from study.execute.writer import TrialsWriter

__all__ = ["TrialsWriter"]
