"""`python -m study.run`: run, resume or list hyperparameter studies (README, "Running a study").

Exit codes: 0 every trial finished (diverged included), 1 some trial errored,
2 bad input (one line on stderr, nothing written) or a storage fault (one line), 130
interrupted (Ctrl+C), 143 terminated (SIGTERM, handled as Ctrl+C).
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator, Sequence

from study.errors import StudyError
from study.execute.sigterm import EXIT_TERMINATED, stop_on_sigterm, terminated


def main(argv: Sequence[str] | None = None) -> int:

    with _stop_on_sigterm():
        try:
            return _main(argv)
        except KeyboardInterrupt:  # while _main imports, before its own `try`
            return _interrupted()


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

        outcome = execute(options)
        if terminated() and outcome.exit_code == EXIT_INTERRUPTED:
            from study.service import resume_command

            resume = resume_command(outcome.paths)
            print(f"interrupted by SIGTERM; resume with: {resume}", file=sys.stderr)
            return EXIT_TERMINATED
        return outcome.exit_code
    except StudyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:  # outside Tune's own graceful stop (e.g. while Ray starts)
        return _interrupted()


def _interrupted() -> int:
    """Ctrl+C or SIGTERM outside Tune's loop: one line, 130 or 143."""
    if terminated():
        print("interrupted by SIGTERM", file=sys.stderr)
        return EXIT_TERMINATED
    print("interrupted", file=sys.stderr)
    return 130


@contextlib.contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    """SIGTERM is Ctrl+C (study.execute.sigterm) from the start, before `ray.init` too (which
    replaces the handler, and `connect` installs it again); the caller's handler is restored."""
    previous = stop_on_sigterm()
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
