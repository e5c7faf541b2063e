"""`python -m study.run`: run, resume or list hyperparameter studies (README, "Running a study").

Exit codes: 0 every trial finished (diverged included), 1 some trial errored,
2 bad input (one line on stderr, nothing written), 130 interrupted.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator, Sequence

from study.errors import StudyError


def main(argv: Sequence[str] | None = None) -> int:

    with _exit_on_sigterm():
        return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
    from study.cli import parse_args
    from study.service import EXIT_BAD_INPUT, EXIT_INTERRUPTED

    try:
        args, options = parse_args(argv)
        if args.list:
            from study.listing import list_spaces

            print(list_spaces())
            return 0
        from study.api import execute

        return execute(options).exit_code
    except StudyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:  # outside Tune's own graceful stop (e.g. while Ray starts)
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


@contextlib.contextmanager
def _exit_on_sigterm() -> Iterator[None]:
    """SIGTERM raises SystemExit, so `finally` blocks run (the study lock is released) also
    before `ray.init`, which installs the same kind of handler itself; restored afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
