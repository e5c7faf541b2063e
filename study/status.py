"""`python -m study.status NAME [--storage DIR] [--json] [--verify]`: where a study stands,
from its files.

It reads `study.json`, `results/trials.parquet`, `results/metrics/*.parquet` and the study lock,
and never starts Ray: neither ray nor torch is imported, so it answers in a fraction of a
second while a driver runs the study, or after it has gone. Exit codes: 0 shown, 2 bad input
(an unknown study, an unreadable file: one line on stderr). `--verify` checks every results
file against its content checksum instead (study.store.verify): 0 every file matches (or
predates checksums), 1 some file does not, each named with its trial.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

import pyarrow as pa
import pyarrow.fs as pafs

from study.errors import StudyError
from study.request.spec import StudySpec
from study.store.fs import StudyPaths, check_name, read_json, read_parquet, resolve_storage
from study.store.layout import FINISHED, Status
from study.store.state import last_write, lock_state
from study.store.verify import FileCheck, parquet_files, render_checks, verify_study

EXIT_OK, EXIT_MISMATCH, EXIT_BAD_INPUT = 0, 1, 2
# FINISHED: done for good; STOPPED ends early by design.
ENDED_EARLY = (Status.DIVERGED, Status.STOPPED)  # the steps after their last record never run
NOT_STARTED = "NOT_STARTED"  # planned trials the searcher has not created yet


@dataclass
class TrialView:
    trial_id: str
    status: str
    total_steps: int
    step: int = 0  # the furthest step with a record, from either file
    metric: float | None = None  # the space's metric at that record
    swept: dict[str, Any] = field(default_factory=dict)


def status(name: str, storage: str = "studies") -> dict[str, Any]:
    """The study's state as plain JSON-able values; StudyError when it cannot be read."""
    paths = StudyPaths(resolve_storage(storage), check_name(name, "NAME"))
    if not paths.exists():
        raise StudyError(
            f"no study {name!r} at {paths.display(paths.experiment)} (check NAME and --storage)"
        )
    lock = lock_state(paths)
    spec = _read_spec(paths, lock)
    trials = _read_trials(paths)
    space, planned, steps_per_new = _plan(spec)
    metric, mode = (space.metric, space.mode) if space is not None else ("test_acc", "max")
    swept = [*space.grid, *space.distributions] if space is not None else []
    _add_results(paths, trials, metric, swept)

    counts = Counter(t.status for t in trials.values())
    known = len(trials)
    planned = max(planned or known, known)
    if planned > known:
        counts[NOT_STARTED] += planned - known
    steps_total = _steps_total(spec, space, trials, planned, steps_per_new)
    steps_done = sum(
        t.total_steps if t.status == Status.TERMINATED else t.step for t in trials.values()
    )
    ended_early = sum(
        max(t.total_steps - t.step, 0) for t in trials.values() if t.status in ENDED_EARLY
    )
    return {
        "study": name,
        "path": paths.display(paths.experiment),
        "space": spec.space if spec else None,
        "space_from_file": bool(spec and spec.source == "file"),
        "searcher": spec.searcher if spec else None,
        "smoke": spec.smoke if spec else None,
        "created_at": spec.created_at if spec else None,
        "trials": {
            "total": planned,
            "finished": sum(counts.get(s, 0) for s in FINISHED),
            "by_status": dict(sorted(counts.items())),
        },
        "steps": {"done": steps_done, "total": steps_total, "ended_early": ended_early},
        "best": _best(trials, metric, mode),
        "last_write": last_write(paths),
        "lock": lock,
    }


def verify(name: str, storage: str = "studies") -> list[FileCheck]:
    """Every results file of the study checked against its checksum, and every finished
    trial's metrics file present; StudyError when the study cannot be found."""
    paths = StudyPaths(resolve_storage(storage), check_name(name, "NAME"))
    if not paths.exists():
        raise StudyError(
            f"no study {name!r} at {paths.display(paths.experiment)} (check NAME and --storage)"
        )
    try:  # an unreadable trials.parquet is one of the verdicts, not a reason to stop
        finished = [t.trial_id for t in _read_trials(paths).values() if t.status in FINISHED]
    except StudyError:
        finished = []
    return verify_study(paths, finished)


# ---------------------------------------------------------------- reading the files


def _read_spec(paths: StudyPaths, lock: Mapping[str, Any]) -> StudySpec | None:
    fs = paths.storage.fs
    if fs.get_file_info(paths.spec).type == pafs.FileType.NotFound:
        if lock["state"] != "none":  # a driver that has not written study.json yet
            return None
        raise StudyError(
            f"{paths.display(paths.spec)} is missing: {paths.display(paths.experiment)} is not "
            "a study, or one whose driver stopped before it started"
        )
    try:
        return StudySpec.from_json(read_json(fs, paths.spec), paths.display(paths.spec))
    except (OSError, ValueError) as exc:
        raise StudyError(f"{paths.display(paths.spec)} is unreadable ({_first(exc)})") from None


def _read_table(fs: pafs.FileSystem, path: str, shown: str, columns: Sequence[str]) -> pa.Table:
    try:
        table = read_parquet(fs, path)
        return table.select([c for c in columns if c in table.column_names])
    except (OSError, pa.ArrowException, ValueError) as exc:
        raise StudyError(f"{shown} is unreadable ({_first(exc)})") from None


def _read_trials(paths: StudyPaths) -> dict[str, TrialView]:
    fs = paths.storage.fs
    if fs.get_file_info(paths.trials).type == pafs.FileType.NotFound:
        return {}
    shown = paths.display(paths.trials)
    rows = _read_table(fs, paths.trials, shown, ["trial_id", "status", "total_steps", "step"])
    if "trial_id" not in rows.column_names or "status" not in rows.column_names:
        raise StudyError(f"{shown} is unreadable (no trial_id or status column)")
    out: dict[str, TrialView] = {}
    for row in rows.to_pylist():
        out[row["trial_id"]] = TrialView(
            trial_id=row["trial_id"],
            status=row["status"] or "UNKNOWN",
            total_steps=int(row.get("total_steps") or 0),
            step=int(row.get("step") or 0),
        )
    return out


def _add_results(
    paths: StudyPaths, trials: dict[str, TrialView], metric: str, swept: Sequence[str]
) -> None:
    """Each trial's furthest record and the space's metric there (what Tune and the progress
    line rank by). A trial writes its rows at each checkpoint, the driver trials.parquet every
    few seconds: the furthest record in either counts. A metrics file without a trials.parquet
    row (that file lost, or not written yet) is still a trial of the study."""
    fs = paths.storage.fs
    columns = ["trial_id", "step", "total_steps", metric, *swept]
    sources = [
        (p, paths.display(p)) for p in parquet_files(paths.storage.fs, paths.metrics).values()
    ]
    if fs.get_file_info(paths.trials).type == pafs.FileType.File:
        sources.append((paths.trials, paths.display(paths.trials)))
    latest: dict[str, int] = {}
    for path, shown in sources:
        for row in _read_table(fs, path, shown, columns).to_pylist():
            trial_id, step = row.get("trial_id"), row.get("step")
            if trial_id is None or step is None:
                continue
            view = trials.get(trial_id)
            if view is None:
                view = trials[trial_id] = TrialView(
                    trial_id, "UNKNOWN", int(row.get("total_steps") or 0)
                )
            if int(step) < latest.get(trial_id, -1):
                continue
            latest[trial_id] = view.step = int(step)
            value = row.get(metric)
            number = isinstance(value, int | float) and not isinstance(value, bool)
            view.metric = float(value) if number and math.isfinite(value) else None
            view.swept = {k: row[k] for k in swept if k in row}


# ---------------------------------------------------------------- the plan, without Ray


def _plan(spec: StudySpec | None) -> tuple[Any, int | None, int | None]:
    """The study's space (smoke and --set applied), its planned trial count, and the steps of a
    trial a searcher has not created yet (None when they vary). Nothing is checked or run: a
    study's data files may have moved since it started, and that is no reason to hide it."""
    if spec is None:
        return None, None, None
    import dataclasses

    from study.plan import get_space

    try:
        space = get_space(spec.space, spec.space_definition)
    except StudyError:
        return None, None, None  # a built-in space renamed since: counts from the files only
    if spec.smoke:
        space = space.smoke_version()
    fixed, grid = dict(space.fixed), dict(space.grid)
    distributions = dict(space.distributions)
    for key, value in spec.overrides.items():
        grid.pop(key, None)
        distributions.pop(key, None)
        fixed[key] = value
    space = dataclasses.replace(space, fixed=fixed, grid=grid, distributions=distributions)
    if spec.searcher == "grid":
        return space, space.grid_size() * spec.num_samples, None
    steps = None
    if "total_steps" not in grid and "total_steps" not in distributions:
        steps = _total_steps({**space.fixed})
    return space, spec.num_samples, steps


def _total_steps(mapping: Mapping[str, Any]) -> int | None:
    from trainables import TrialConfig

    try:
        return TrialConfig.from_mapping(mapping).total_steps
    except ValueError:
        return None


def _steps_total(
    spec: StudySpec | None,
    space: Any,
    trials: Mapping[str, TrialView],
    planned: int,
    steps_per_new: int | None,
) -> int | None:
    """Every planned trial's T: a grid's from its points, a searcher's from the known trials
    plus T for each trial still to come (None when T is sampled)."""
    known = sum(t.total_steps for t in trials.values())
    missing = planned - len(trials)
    if missing <= 0:
        return known
    if spec is not None and space is not None and spec.searcher == "grid":
        from study.plan import _combinations

        per_pass = [_total_steps(m) for m in _combinations(space)]
        if all(s is not None for s in per_pass):
            return sum(per_pass) * spec.num_samples
        return None
    return known + missing * steps_per_new if steps_per_new is not None else None


def _best(trials: Mapping[str, TrialView], metric: str, mode: str) -> dict[str, Any]:
    ranked = [t for t in trials.values() if t.metric is not None]
    out: dict[str, Any] = {
        "metric": metric,
        "mode": mode,
        "test_metric": metric.startswith("test_"),
        "trial_id": None,
    }
    if not ranked:
        return out
    pick = max if mode == "max" else min
    best = pick(ranked, key=lambda t: t.metric)
    return {
        **out,
        "trial_id": best.trial_id,
        "value": best.metric,
        "step": best.step,
        "status": best.status,
        "config": best.swept,
    }


# ---------------------------------------------------------------- the CLI


def render(view: Mapping[str, Any]) -> str:
    """The human-readable form of `status()`."""
    trials, steps, best = view["trials"], view["steps"], view["best"]
    space = view["space"] or "(not recorded yet)"
    if view["space_from_file"]:
        space += " (from a file; the study keeps its copy)"
    if view["smoke"]:
        space += " (smoke)"
    lines = [
        f"study {view['study']}: {view['path']}",
        f"  space    {space}, searcher {view['searcher'] or '-'}",
    ]
    by_status = ", ".join(f"{n} {s}" for s, n in trials["by_status"].items()) or "none yet"
    lines.append(f"  trials   {trials['finished']}/{trials['total']} finished: {by_status}")
    total = f"{steps['total']:,}" if steps["total"] is not None else "?"
    early = f" ({steps['ended_early']:,} never run: trials that ended early)"
    lines.append(f"  steps    {steps['done']:,}/{total}" + (early if steps["ended_early"] else ""))
    what = f"{best['metric']} ({best['mode']}, the space's metric)"
    if best["trial_id"] is None:
        lines.append(f"  best     - by {what}: no trial has a finite value yet")
    else:
        config = " ".join(f"{k}={v}" for k, v in best["config"].items())
        lines.append(
            f"  best     {best['value']:.4f} {what}: trial {best['trial_id']} "
            f"at step {best['step']} ({best['status']}{', ' + config if config else ''})"
        )
    if best["test_metric"]:
        lines.append(
            f"           {best['metric']} is a test metric: watch it, but select models on "
            "validation (val_acc, val_loss), never on it"
        )
    last = view["last_write"]
    if last:
        lines.append(f"  written  {last['at']} ({_ago(last['seconds_ago'])} ago: {last['file']})")
    lines.append(f"  lock     {view['lock']['text']}")
    return "\n".join(lines)


def _ago(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def _first(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise StudyError(f"{message} (see --help)")


def parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m study.status",
        description="Show where a study stands, from its files alone (Ray is not started).",
    )
    p.add_argument("name", metavar="NAME", help="the study's name")
    p.add_argument("--storage", default="studies", help="where studies live (default ./studies)")
    p.add_argument("--json", action="store_true", help="print the same as one JSON object")
    p.add_argument(
        "--verify",
        action="store_true",
        help="check every results file against its checksum: exit 1 naming any that differs",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
        if args.verify:
            return _main_verify(args.name, args.storage, args.json)
        view = status(args.name, args.storage)
    except StudyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:  # storage that cannot be listed or read
        print(f"error: cannot read the study: {_first(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(json.dumps(view, indent=2, sort_keys=True) if args.json else render(view))
    return EXIT_OK


def _main_verify(name: str, storage: str, as_json: bool) -> int:
    checks = verify(name, storage)
    bad = [c for c in checks if c.bad]
    if as_json:
        files = [{"path": c.path, "table": c.table, "trial_id": c.trial_id, "state": c.state,
                  "detail": c.detail} for c in checks]  # fmt: skip
        print(json.dumps({"study": name, "ok": not bad, "files": files}, indent=2))
    else:
        print(render_checks(name, checks))
    return EXIT_MISMATCH if bad else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
