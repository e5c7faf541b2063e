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
import tempfile
from collections.abc import Sequence
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


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=255,
                   help="trial files, rounded down to whole seeds of 13 K values (default: 255)")  # fmt: skip
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--smoke", action="store_true", help="13 trial files, 2 rounds")
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
        # wall clock: reading the files is part of what is compared
        times = C.interleaved(variants, rounds, reps=1, device=torch.device("cpu"))
    print(C.environment(torch.device("cpu")))  # the machine, as every benchmark prints it
    print(f"# pyarrow {pa.__version__}, pandas {pd.__version__}; {len(files)} trial files")
    new, old = times.median("reports' reader", "wall"), times.median("per file", "wall")
    print(f"reports' reader {new * 1e3:.1f} ms, per file {old * 1e3:.1f} ms "
          f"(median of {rounds} rounds)")  # fmt: skip
    ratio = times.ratio("per file", "reports' reader", "wall")
    print(
        f"ratio per-file read (thread pool, one conversion per file) / reports' reader: {ratio:.2f}"
    )


if __name__ == "__main__":
    main()
