"""SIGTERM is Ctrl+C: what schedulers and `kill` send stops a study the way Ctrl+C does.

Inside `Tuner.fit()` SIGTERM calls Tune's own SIGINT handler, which ends Tune's loop after
the current step and saves the experiment one last time (trials continue on resume);
elsewhere it raises `Terminated`, a KeyboardInterrupt, so `finally` blocks release the study
lock. The CLI then exits 143 (128 + SIGTERM). `ray.init` installs handlers of its own (the
driver's `sys.exit(15)`; an embedded head's, which kills Ray's processes and exits 1), so
`study.execute.cluster.connect` installs this one again after it. Standard library only: the
CLI installs it before it imports Ray.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

EXIT_TERMINATED = 128 + signal.SIGTERM
_TERMINATED = threading.Event()


class Terminated(KeyboardInterrupt):
    """SIGTERM outside Tune's loop: unwinds as Ctrl+C does."""


def terminated() -> bool:
    """Whether this process received SIGTERM."""
    return _TERMINATED.is_set()


def mark_terminated() -> None:
    """Record a SIGTERM that another handler (Ray's, during ray.init) received."""
    _TERMINATED.set()


def stop_on_sigterm() -> Any:
    """Install the handler (main thread only: no other can); returns the one it replaced."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _on_sigterm)


def _on_sigterm(signum: int, frame: Any) -> None:
    if _TERMINATED.is_set():
        return  # already stopping: a second SIGTERM must not cut the last snapshot or the unlock
    _TERMINATED.set()
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler) and handler is not signal.default_int_handler:
        handler(signal.SIGINT, frame)  # Tune's, while fit() runs
        return
    raise Terminated
