"""Claim: reading a study's metrics for a report costs one Arrow join and one conversion to
pandas, not a thread-pool read and a conversion per trial file.

A synthetic study (tests/reports/report_data.py: the service's schema, one metrics file per trial)
is read by `reports`' reader and by the per-file way it replaced (each file read with Arrow's
thread pool, converted to pandas, then ``pd.concat``), interleaved, from the same files. The
reader also tidies ids, drops duplicate rows and sorts, which the per-file baseline skips: the
ratio understates the gain.

Second claim: decoding one small trial file with ``pq.ParquetFile(...).read()`` is faster than
with ``pq.read_table``, which builds a dataset around the one file on every call. Both read
the same bytes on the calling thread, and the tables are checked equal before timing.

Run:   python -m benchmarks.report_load [--trials N] [--smoke]
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from benchmarks import _common as C


def _per_file(files: list) -> pd.DataFrame:
    """The reader before: Arrow's thread pool per file, one pandas conversion per file."""
    frames = [table.to_pandas() for table in _decode_each(files, pq.read_table)]
    return pd.concat(frames, ignore_index=True, sort=False)


def _decode_each(files: list, read: Callable[[pa.BufferReader], pa.Table]) -> list[pa.Table]:
    tables = []
    for file in files:
        with file.fs.open_input_file(file.path) as f:
            data = f.read_buffer()
        tables.append(read(pa.BufferReader(data)))
    return tables


def _read_table(source: pa.BufferReader) -> pa.Table:
    return pq.read_table(source, use_threads=False)  # reports' reader before the change


def _parquet_file(source: pa.BufferReader) -> pa.Table:
    return pq.ParquetFile(source).read(use_threads=False)  # reports._paths.read_table now


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
        old_way, new_way = _decode_each(files, _read_table), _decode_each(files, _parquet_file)
        assert all(a.schema.equals(b.schema, check_metadata=True) and a.to_pandas().equals(
            b.to_pandas()) for a, b in zip(old_way, new_way, strict=True))  # fmt: skip
        decoders = {
            "pq.read_table": lambda: _decode_each(files, _read_table),
            "ParquetFile.read": lambda: _decode_each(files, _parquet_file),
        }
        decoding = C.interleaved(decoders, rounds, reps=1, device=torch.device("cpu"))
    print(C.environment(torch.device("cpu")))  # the machine, as every benchmark prints it
    print(f"# pyarrow {pa.__version__}, pandas {pd.__version__}; {len(files)} trial files")
    new, old = times.median("reports' reader", "wall"), times.median("per file", "wall")
    print(f"reports' reader {new * 1e3:.1f} ms, per file {old * 1e3:.1f} ms "
          f"(median of {rounds} rounds)")  # fmt: skip
    ratio = times.ratio("per file", "reports' reader", "wall")
    print(
        f"ratio per-file read (thread pool, one conversion per file) / reports' reader: {ratio:.2f}"
    )
    before, after = (
        decoding.median("pq.read_table", "wall"),
        decoding.median("ParquetFile.read", "wall"),
    )
    print(f"decoding {len(files)} files: pq.read_table {before * 1e3:.1f} ms, "
          f"ParquetFile.read {after * 1e3:.1f} ms (median of {rounds} rounds, tables equal)")  # fmt: skip
    ratio = decoding.ratio("pq.read_table", "ParquetFile.read", "wall")
    print(f"ratio decoding each trial file, pq.read_table / pq.ParquetFile.read: {ratio:.2f}")


if __name__ == "__main__":
    main()
