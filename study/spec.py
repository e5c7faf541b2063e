"""Old path of `study.request.spec`, kept for tests outside `tests/study/` that import it."""

from study.request.spec import *  # noqa: F403
from study.request.spec import FORMAT, REMEMBERED, StudySpec, check_same, now_iso  # noqa: F401
