"""Kill-and-resume loop: counts what survives real driver kills, clock zones and rivals.

    python -m tests.reliability_loop --kills 10

Runs the smoke space (longer trials, `--checkpoint-every 2`) once uninterrupted as the
baseline, then the same study as `python -m study.run` drivers (each with its own embedded
Ray, each under a different `TZ`) that are SIGKILLed at random moments and resumed, until the
study finishes. At every start a rival `--resume` of the same study is launched too: it must
be refused (exit 2) while the first driver holds the lock. At the end every (trial, step) row
is compared with the baseline: rows lost, rows duplicated, values that differ. Prints one
`count` line per figure. `--smoke` runs 2 kills.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
ZONES = ("UTC", "Etc/GMT-14", "Etc/GMT+12", "America/New_York", "Asia/Kolkata", "Etc/GMT+3")
SETS = ["--set", "total_steps=2000", "--set", "eval_every=100", "--checkpoint-every", "2"]
VALUES = ["k", "step", "feature_updates", "train_loss", "train_acc", "test_loss", "test_acc"]


def _driver(argv: list[str], storage: Path, log: Path, zone: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "TUNE_"))}
    env.update(TZ=zone, PYTHONUNBUFFERED="1", RAY_USAGE_STATS_ENABLED="0")
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "study.run", *argv, "--storage", str(storage)],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def _kill(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)


def _holder_pid(lock: Path) -> int | None:
    try:
        return json.loads(lock.read_text()).get("pid")
    except (OSError, ValueError):
        return None


def _reported(experiment: Path) -> int:
    """Lines of Tune's result.json files: results reported so far."""
    lines = 0
    for file in experiment.glob("ilstudy_trial_*/result.json"):
        with contextlib.suppress(OSError):
            lines += len(file.read_bytes().splitlines())
    return lines


def _metrics(experiment: Path) -> pd.DataFrame:
    return pd.read_parquet(experiment / "results" / "metrics")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    kills_wanted = 2 if args.smoke else args.kills
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="ilstudy-loop-"))
    storage, logs = root / "studies", root / "logs"
    logs.mkdir(parents=True)

    base = _driver(["--space", "smoke", "--name", "baseline", *SETS], storage, logs / "b", "UTC")
    assert base.wait(timeout=600) == 0, (logs / "b").read_text()[-2000:]
    baseline = _metrics(storage / "baseline")

    kills = refused = named = rivals = starts = 0
    first = ["--space", "smoke", "--name", "loop", *SETS]
    resume = ["--resume", "--name", "loop"]
    lock = storage / "loop" / "study.store.lock"
    code = None
    while code is None:
        zone = rng.choice(ZONES)
        log = logs / f"d{starts}"
        started = (storage / "loop" / "study.json").exists()  # else killed while Ray started
        driver = _driver(resume if started else first, storage, log, zone)
        starts += 1
        deadline = time.time() + 120
        while _holder_pid(lock) != driver.pid and driver.poll() is None:
            assert time.time() < deadline, log.read_text()[-2000:]
            time.sleep(0.02)
        if driver.poll() is None:  # a rival while the lock is held: must be refused
            rival_log = logs / f"r{starts}"
            rival = _driver(resume, storage, rival_log, rng.choice(ZONES))
            rivals += 1
            if rival.wait(timeout=120) == 2:
                refused += 1
                named += "locked by" in rival_log.read_text()
        if kills < kills_wanted:
            if rng.random() < 1 / 3:  # while Ray starts or Tune sets up
                time.sleep(rng.uniform(0.5, 5.0))
            else:  # once this driver's trials report, a little later
                seen = _reported(storage / "loop")
                while _reported(storage / "loop") == seen and driver.poll() is None:
                    assert time.time() < deadline + 120, log.read_text()[-2000:]
                    time.sleep(0.02)
                time.sleep(rng.uniform(0.0, 3.0))
            if driver.poll() is None:
                _kill(driver)
                kills += 1
                continue
        code = driver.wait(timeout=600)
        if code != 0:
            print((log).read_text()[-3000:], file=sys.stderr)
    metrics = _metrics(storage / "loop")
    expected = set(map(tuple, baseline[["k", "step"]].to_numpy()))
    got = [tuple(r) for r in metrics[["k", "step"]].to_numpy()]
    lost = len(expected - set(got))
    duplicated = len(got) - len(set(got))
    a = baseline[VALUES].sort_values(["k", "step"]).reset_index(drop=True)
    b = metrics[VALUES].sort_values(["k", "step"]).reset_index(drop=True)
    differing = int((a != b).any(axis=1).sum()) if a.shape == b.shape else -1
    restored = int((metrics["attempt"] > 0).sum())
    print(f"count driver SIGKILLs survived: {kills} (driver starts {starts}, final exit {code})")
    print(
        f"count rival --resume drivers refused while the lock was held: {refused}/{rivals} "
        f"({named} naming the holder)"
    )
    print(f"count rows expected {len(expected)}, lost {lost}, duplicated {duplicated}")
    print(f"count rows whose values differ from the uninterrupted baseline: {differing}")
    print(f"count rows written by a restored attempt (attempt > 0): {restored}")
    print(f"storage: {root}")
    return 0 if code == 0 and lost == duplicated == differing == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
