"""Claim: reading a study's metrics for a report costs one Arrow join and one conversion to
pandas, not a thread-pool read and a conversion per trial file.

A synthetic study (tests/reports/report_data.py: the service's schema, one metrics file per trial)
is read by `reports`' reader and by the per-file way it replaced (each file read with Arrow's
thread pool, converted to pandas, then ``pd.concat``), interleaved, from the same files. The
reader also tidies ids, drops duplicate rows and sorts, which the per-file baseline skips: the
ratio understates the gain.

Run:   python -m benchmarks.report_load [--trials N] [--smoke]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from benchmarks import _common as C


def _per_file(files: list) -> pd.DataFrame:
    """The reader before: Arrow's thread pool per file, one pandas conversion per file."""
    frames = []
    for file in files:
        with file.fs.open_input_file(file.path) as f:
            data = f.read_buffer()
        frames.append(pq.read_table(pa.BufferReader(data)).to_pandas())
    return pd.concat(frames, ignore_index=True, sort=False)


def _time(variants: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {name: [] for name in variants}
    for fn in variants.values():
        fn()  # warm-up: imports, the page cache
    for _ in range(rounds):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            fn()
            out[name].append(time.perf_counter() - t0)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=255, help="trial files (default: k_sweep's 255)")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--smoke", action="store_true", help="20 trials, 2 rounds")
    args = p.parse_args(argv)
    trials, rounds = (20, 2) if args.smoke else (args.trials, args.rounds)

    from reports._load import _read_metrics
    from reports._paths import find_results
    from tests.reports.report_data import Spec, make_study

    seeds = max(1, trials // 13)  # Spec's 13 values of K, plus the plain baselines
    with tempfile.TemporaryDirectory() as tmp:
        study = make_study(Path(tmp), Spec(study="bench", seeds=tuple(range(seeds)), plain=()))
        results, files, _ = find_results(study)
        variants = {
            "reports' reader": lambda: _read_metrics(results / "metrics", files, {}),
            "per file": lambda: _per_file(files),
        }
        times = _time(variants, rounds)
    new, old = times["reports' reader"], times["per file"]
    print(C.environment(torch.device("cpu")))  # the machine, as every benchmark prints it
    print(f"# pyarrow {pa.__version__}, pandas {pd.__version__}; {len(files)} trial files")
    print(f"reports' reader {statistics.median(new) * 1e3:.1f} ms, "
          f"per file {statistics.median(old) * 1e3:.1f} ms (median of {rounds} rounds)")  # fmt: skip
    ratio = statistics.median(a / b for a, b in zip(old, new, strict=True))
    print(
        f"ratio per-file read (thread pool, one conversion per file) / reports' reader: {ratio:.2f}"
    )


if __name__ == "__main__":
    main()
