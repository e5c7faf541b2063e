"""Every benchmark runs in its smoke mode and prints its ratio lines. Speed is never asserted:
the numbers of a shared machine are the benchmarks' business, not a test's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CPU_BENCHMARKS = {
    "step_cost": [
        "ratio mlp linearised K=10 / plain trainer",
        "ratio cnn linearised K=∞ / plain trainer",
        "ratio cnn dual tensors / layer-wise",
    ],
    "gn_solvers": [
        "ratio auto as a trial calls it (SolverMemory) / faster solver, worst cell",
        "ratio auto cold (a probe at every call) / faster solver, worst cell",
        "crossover mlp",
    ],
    "measure_cost": ["ratio measures' cost / training time"],
    "stability_cost": [
        "ratio λ_max on a probe twice as large / on the probe",
        "ratio stability measures' cost / the trial without them",
    ],
    "cold_start": [
        "ratio fresh process (start to exit) / the same trial warm",
        "heavy modules the fresh process imported:",
    ],
    "adaptive_k": ["ratio adaptive / grid trials to the grid's width"],
    "adaptive_real": ["ratio adaptive / grid trials to the grid's width, real trials"],
    "report_load": [
        "ratio per-file read (thread pool, one conversion per file) / reports' reader",
        "ratio decoding each trial file, pq.read_table / pq.ParquetFile.read",
    ],
    "report_stability": ["ratio per-trial stability reading, frames (9e246aa) / arrays"],
}


def _run(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.slow
def test_every_cpu_benchmark_runs_its_smoke_mode_and_prints_its_ratios():
    """All of them in one interpreter (python -m benchmarks): one torch import, seconds."""
    done = _run("-m", "benchmarks")
    out = done.stdout
    assert done.returncode == 0, out[-2000:] + done.stderr[-3000:]
    for name, lines in CPU_BENCHMARKS.items():
        section = out.split(f"######## benchmarks.{name} --smoke", 1)[1].split("########")[0]
        assert section.lstrip().startswith("# torch "), section[:200]  # hardware, versions first
        for line in lines:
            assert line in section, (name, line, section[-2000:])


@pytest.mark.slow
@pytest.mark.ray
def test_study_overhead_smoke_runs_a_real_study():
    """Starts Ray in a subprocess (the study CLI): slower than the others, marked ray."""
    done = _run("-m", "benchmarks.study_overhead", "--smoke", timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "ratio study / (back to back / " in done.stdout
    assert "ratio throughput, study vs one at a time" in done.stdout


@pytest.mark.slow  # subprocesses: each benchmark started without CUDA
def test_benchmarks_fail_fast_and_clearly_without_cuda(capsys):
    import argparse

    import torch

    from benchmarks import _common

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    args = argparse.Namespace(device="cuda", threads=None, smoke=True)
    with pytest.raises(SystemExit, match="no CUDA device"):
        _common.setup(args)  # every benchmark's first call
    script = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh")],
        env={**os.environ, "PY": sys.executable}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert script.returncode == 2 and "sees no CUDA device" in script.stderr
