"""Shared benchmark plumbing: interleaved timing, peak memory, the environment line, tables.

Every benchmark measures its variants side by side in one process: round after round, each
variant runs one block of repeats in turn, so slow drifts of a shared machine hit all of them
alike. Ratios are medians over rounds of the ratio *within* a round (paired), not ratios of
medians. On the CPU the main clock is process CPU time, which a noisy neighbour taking turns
on the cores inflates far less than wall time; wall time is printed beside it.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


# ---- command line and environment --------------------------------------------------------
def parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark takes."""
    p = argparse.ArgumentParser(
        description=(doc or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda (cuda fails fast without a GPU)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, seconds: checks it runs")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (median over)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all)")
    return p


def setup(args: argparse.Namespace) -> torch.device:
    """Resolve --device (failing fast and clearly) and --threads; print the environment."""
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: no CUDA device is visible to torch")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(environment(device))
    if args.smoke:
        print("# smoke mode: sizes and repeats too small for its numbers to mean anything")
    return device


def environment(device: torch.device) -> str:
    """Hardware and versions, one line, for every table."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    where = f"cpu: {cpu}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"
    if device.type == "cuda":
        where += f"; cuda: {torch.cuda.get_device_name(device)}"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"# torch {torch.__version__}, python {platform.python_version()}; {where}; "
        f"load average {load:.1f}"
    )


# ---- timing ----------------------------------------------------------------------------
@dataclass
class Timings:
    """Per-round seconds per call of each variant, for both clocks."""

    wall: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)

    def median(self, name: str, clock: str = "cpu") -> float:
        return statistics.median(getattr(self, clock)[name])

    def ratio(self, name: str, base: str, clock: str = "cpu") -> float:
        """Median over rounds of (name / base) measured in the same round."""
        a, b = getattr(self, clock)[name], getattr(self, clock)[base]
        return statistics.median(x / y for x, y in zip(a, b, strict=True))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(
    variants: dict[str, Callable[[], object]],
    rounds: int,
    reps: int | dict[str, int],
    device: torch.device,
    warmup: int = 1,
) -> Timings:
    """Time each variant's block of `reps` calls, variants interleaved, `rounds` times."""
    reps_of = reps if isinstance(reps, dict) else dict.fromkeys(variants, reps)
    out = Timings({k: [] for k in variants}, {k: [] for k in variants})
    for name, fn in variants.items():
        for _ in range(warmup * reps_of[name]):
            fn()
    synchronize(device)
    for _ in range(rounds):
        for name, fn in variants.items():
            n = reps_of[name]
            synchronize(device)
            w0, c0 = time.perf_counter(), time.process_time()
            for _ in range(n):
                fn()
            synchronize(device)  # a CPU-GPU sync point: the block's kernels must have finished
            out.wall[name].append((time.perf_counter() - w0) / n)
            out.cpu[name].append((time.process_time() - c0) / n)
    return out


# ---- memory ----------------------------------------------------------------------------
class _LiveTensorBytes(TorchDispatchMode):
    """Bytes of tensor storage created under the mode and still alive; tracks the peak."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[tuple[int, int], tuple[StorageWeakRef, int]] = {}
        self.now = self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for key in [k for k, (ref, _) in self.live.items() if ref.expired()]:
            self.now -= self.live.pop(key)[1]
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.device.type == "cpu":
                try:
                    storage = t.untyped_storage()
                    key = (storage.data_ptr(), storage.nbytes())
                except RuntimeError:  # no real storage (a wrapper tensor): nothing allocated
                    continue
                if storage.nbytes() and key not in self.live:
                    self.live[key] = (StorageWeakRef(storage), storage.nbytes())
                    self.now += storage.nbytes()
        self.peak = max(self.peak, self.now)
        return out


def peak_bytes(fn: Callable[[], object], device: torch.device) -> int:
    """Peak bytes allocated by fn above what was allocated before it.

    CUDA: the caching allocator's peak. CPU: the peak of live tensor storage created by ops
    during fn (seen through a dispatch mode), so kernels' private scratch space is not counted.
    """
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    mode = _LiveTensorBytes()
    with mode:
        fn()
    return mode.peak


# ---- output ------------------------------------------------------------------------------
def table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A plain fixed-width table (markdown-compatible pipes)."""
    rows = [[_fmt(v) for v in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def _fmt(v: object) -> str:
    if isinstance(v, float):
        if v != v:
            return "–"
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)
