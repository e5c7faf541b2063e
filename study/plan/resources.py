"""Per-trial resources judged before any Ray starts: what the embedded Ray of this machine
can give. A cluster's nodes are checked once the driver is connected (study.execute.cluster)."""

from __future__ import annotations

import os
import sys


def ray_running_here() -> bool:
    """Whether this process already holds a Ray instance (the study then reuses it), found
    without importing Ray."""
    ray = sys.modules.get("ray")
    return bool(ray is not None and getattr(ray, "is_initialized", lambda: False)())


def embedded_cpus() -> int:
    """The most CPUs an embedded Ray of this machine can have: Ray counts the CPUs this
    process may use (affinity, cgroup quota), never more than the machine has."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def embedded_problem(cpus_per_trial: float, address: str | None) -> str | None:
    """Why no trial could ever start on the embedded Ray this study would start, or None.

    Only when the study starts its own Ray (no --address, none running in this process): a
    trial asking for more CPUs than the machine has would wait for ever. GPUs are left to the
    check after connecting, which sees what Ray itself detects.
    """
    if address or ray_running_here():
        return None
    cpus = embedded_cpus()
    if cpus_per_trial > cpus:
        return (
            f"no node can run a trial with --cpus-per-trial {cpus_per_trial:g}: this machine "
            f"has {cpus} CPUs for the embedded Ray (allowed: up to {cpus}, or --address of a "
            "cluster with larger nodes)"
        )
    return None
