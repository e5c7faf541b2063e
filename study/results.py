"""Old path of `study.store.layout`, kept for two reasons: Tune pickles a study's callbacks into
its `tuner.pkl` by module path, with our `Status` values inside them, so a study started before
the layout moved must still unpickle on resume; and tests outside `tests/study/` import it."""

from study.store.layout import *  # noqa: F403
from study.store.layout import (  # noqa: F401  # the names above do not include these
    LAYOUT_KEY,
    ROLE_KEY,
    TABLE_KEY,
    VALUES_KEY,
)
