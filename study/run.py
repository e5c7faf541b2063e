"""`python -m study.run`: run, resume or list hyperparameter studies (README, "Running a study").

Exit codes: 0 every trial finished (diverged included), 1 some trial errored,
2 bad input (one line on stderr, nothing written), 130 interrupted.
"""

from __future__ import annotations

import contextlib
import os
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
        _environment(loopback=not options.address or _is_loopback(options.address))
        from study.service import run_study

        return run_study(options).exit_code
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


def _is_loopback(address: str) -> bool:
    """`address` names this machine's loopback (a cluster that may listen on 127.0.0.1 only)."""
    import ipaddress

    host = address.rpartition(":")[0].strip("[]")
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _environment(loopback: bool) -> None:
    """Settings Ray reads at import time: quiet output; loopback-only embedded Ray.

    The loopback setting is also needed to attach to a cluster at 127.0.0.1: without it Ray
    rewrites 127.0.0.1 to the host's own address, which a loopback-only cluster does not
    listen on, and `ray.init` retries for ever.
    """
    from study.execute.cluster import LOOPBACK_ENV, QUIET_ENV

    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    if loopback and "ray" not in sys.modules:
        for key, value in LOOPBACK_ENV.items():
            os.environ.setdefault(key, value)


if __name__ == "__main__":
    sys.exit(main())
