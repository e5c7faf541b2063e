"""`python -m study.run`: run, resume or list hyperparameter studies (DESIGN.md, CLI).

Exit codes: 0 every trial finished (diverged included), 1 some trial errored,
2 bad input (one line on stderr, nothing written), 130 interrupted.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from study.errors import StudyError


def main(argv: Sequence[str] | None = None) -> int:
    from study.cli import parse_args
    from study.service import EXIT_BAD_INPUT, EXIT_INTERRUPTED

    try:
        args, options = parse_args(argv)
        if args.list:
            from study.listing import list_spaces

            print(list_spaces())
            return 0
        _environment(embedded=not options.address)
        from study.service import run_study

        return run_study(options).exit_code
    except StudyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:  # outside Tune's own graceful stop (e.g. while Ray starts)
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _environment(embedded: bool) -> None:
    """Settings Ray reads at import time: quiet output; loopback-only embedded Ray."""
    from study.cluster import LOOPBACK_ENV, QUIET_ENV

    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    if embedded and "ray" not in sys.modules:
        for key, value in LOOPBACK_ENV.items():
            os.environ.setdefault(key, value)


if __name__ == "__main__":
    sys.exit(main())
