"""The Ray Tune function trainable: a thin adapter around `trainables.Trial`.

The science (`trainables`) knows no service; this adapter is the service's side of a trial.
It restores from `tune.get_checkpoint()`, reports every record with `tune.report`, and
checkpoints every `checkpoint_every` records (or `checkpoint_every_s` seconds) and always at
the end. A checkpoint holds the trial state *and the trial's rows so far*; at each checkpoint
the trial rewrites `results/metrics/<trial_id>.parquet` from exactly those rows, so what is
stored always matches a state the trial can continue from, and a redone report after a
restore (Tune restores from its last experiment snapshot, not the newest checkpoint, so
about one report per trial is redone) rewrites the same (trial, step) rows instead of adding new ones.
The trial's stability rows (`Trial.take_phase_rows`, one per measured linearisation point) go
the same way: kept in the checkpoint, and `results/phases/<trial_id>.parquet` rewritten from
them at each checkpoint (no file while the trial has none: measures off).
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow.parquet as pq

from study.ray_internals import this_trial_storage
from study.store.tune_files import CHECKPOINT_PREFIX

TRAINABLE_NAME = "ilstudy_trial"  # stable: Tuner.restore finds the trainable by this name
_STATE_FILE = "state.pt"  # torch.save of {"trial": Trial.state_dict(), "adapter": {...}}
ROWS_FILE = "rows.parquet"  # the trial's metrics rows up to this checkpoint (study.execute.resume)
PHASES_FILE = "phases.parquet"  # its stability rows (absent in checkpoints made before them)
_CKPT_PREFIX = "ilstudy-ckpt-"  # + "<pid>-": a checkpoint's staging folder in the temp dir


@dataclass(frozen=True)
class AdapterSettings:
    """Study-level settings the trainable needs; not part of any trial's config."""

    study: str
    checkpoint_every: int = 10  # records between checkpoints; 0 = only at the end
    checkpoint_every_s: float = 300.0  # also checkpoint once this many seconds have passed
    code_version: str = "unknown"  # ilstudy version (+ git commit), stored with every row


def make_trainable(settings: AdapterSettings) -> Callable[[dict[str, Any]], None]:
    """A function trainable named `TRAINABLE_NAME`, bound to the study's settings."""

    def ilstudy_trial(config: dict[str, Any]) -> None:
        _run_trial(config, settings)

    ilstudy_trial.__name__ = ilstudy_trial.__qualname__ = TRAINABLE_NAME
    return ilstudy_trial


def trial_device() -> str:
    """CUDA when Ray assigned this trial a GPU and CUDA exists; the CPU otherwise."""
    import ray
    import torch

    return "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"


def _trial_cpus() -> float:
    from ray import tune

    resources = tune.get_context().get_trial_resources().required_resources
    return float(resources.get("CPU", 1.0))


def _results_location() -> tuple[Any, str]:
    """(filesystem, `<storage>/<study>/results`) as seen from this trial's process."""
    from study.store.fs import results_dir

    storage = this_trial_storage()
    return storage.fs, results_dir(storage.experiment)


def _trial_checkpoints() -> list[Any]:
    """Every checkpoint folder of this trial on storage, as `tune.Checkpoint`s.

    Tune hands a restored trial the checkpoint its last experiment snapshot recorded, which
    can be older than the trial's newest checkpoint on storage: a checkpoint counts only after
    the next snapshot, so a driver killed in between made the trial redo that work. The
    trial folder comes from Ray's private storage context (study.ray_internals): the public
    API gives no checkpoint but the snapshot's.
    """
    import pyarrow.fs as pafs
    from ray import tune

    try:
        storage = this_trial_storage()
        fs, folder = storage.fs, storage.trial
        infos = fs.get_file_info(pafs.FileSelector(folder))
    except Exception:
        return []
    return [
        tune.Checkpoint(info.path, filesystem=fs)
        for info in infos
        if info.type == pafs.FileType.Directory
        and os.path.basename(info.path).startswith(CHECKPOINT_PREFIX)
    ]


Rows = list[dict[str, Any]]


def _restore(given: Any, device: str) -> tuple[dict[str, Any], Rows, Rows] | None:
    """(state, metrics rows, phase rows) of the most advanced usable checkpoint: Tune's own, or
    a newer one of this trial's on storage (see `_trial_checkpoints`); None to start afresh.

    "Most advanced" is by content, the number of distinct steps in the checkpoint's rows, not
    by folder index: after such a restore Tune numbers the next checkpoints from the
    snapshot's count again, so an index can hold older work than a lower one. A checkpoint
    whose files do not load (a kill mid-upload) is skipped.
    """
    import torch

    ranked = []
    for order, checkpoint in enumerate(
        [c for c in [given] if c is not None] + _trial_checkpoints()
    ):
        try:
            with checkpoint.as_directory() as directory:
                steps = pq.read_table(os.path.join(directory, ROWS_FILE), columns=["step"])
            ranked.append((len(set(steps.column("step").to_pylist())), -order, checkpoint))
        except Exception:
            continue
    for _, _, checkpoint in sorted(ranked, key=lambda r: r[:2], reverse=True):
        try:
            with checkpoint.as_directory() as directory:
                saved = torch.load(
                    os.path.join(directory, _STATE_FILE), map_location=device, weights_only=False
                )
                rows = pq.read_table(os.path.join(directory, ROWS_FILE)).to_pylist()
                phases = os.path.join(directory, PHASES_FILE)
                phase_rows = pq.read_table(phases).to_pylist() if os.path.exists(phases) else []
        except Exception:
            if checkpoint is given and len(ranked) == 1:
                raise  # Tune's own checkpoint and nothing else: its error is the trial's
            continue
        return saved, rows, phase_rows
    return None


def _node() -> str:
    import ray

    return f"{socket.gethostname()}/{ray.get_runtime_context().get_node_id()[:8]}"


def remove_stale_checkpoint_dirs(root: str | None = None) -> list[str]:
    """Delete checkpoint staging folders of trial processes that died mid-checkpoint.

    Each folder is named `ilstudy-ckpt-<pid>-…` after the process that made it; one whose
    process no longer runs is left over from a kill (`TemporaryDirectory` cleans up only on a
    normal exit). Another trial's live folder is never touched. Returns the folders removed.
    """
    import shutil

    root = root or tempfile.gettempdir()
    removed = []
    try:
        names = os.listdir(root)
    except OSError:
        return removed
    for name in names:
        if not name.startswith(_CKPT_PREFIX):
            continue
        pid_text = name[len(_CKPT_PREFIX) :].split("-", 1)[0]
        if pid_text.isdigit() and _alive(int(pid_text)):
            continue  # a live trial's
        if not pid_text.isdigit() and time.time() - _mtime(os.path.join(root, name)) < 3600:
            continue  # older versions' folders carry no pid: removed once clearly abandoned
        shutil.rmtree(os.path.join(root, name), ignore_errors=True)
        removed.append(name)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _mtime(path: str) -> float:
    try:
        return os.path.getmtime(path)
    except OSError:
        return time.time()


def _run_trial(config: Mapping[str, Any], settings: AdapterSettings) -> None:
    entered_at = time.time()  # the trial's start, before imports and data loading
    import torch
    from ray import tune

    from study.store.layout import (
        METRICS_SCHEMA,
        PHASES_SCHEMA,
        config_columns,
        metric_columns,
        phase_columns,
        table,
        utc,
        write_trial_phases,
    )
    from study.store.layout import write_trial_metrics as write_metrics
    from trainables import Trial

    torch.set_num_threads(max(1, int(_trial_cpus())))  # threads follow the trial's CPU share
    device = trial_device()
    trial_id = tune.get_context().get_trial_id()
    fs, results = _results_location()
    trial = Trial(config, device=device)
    rows: Rows = []
    phase_rows: Rows = []
    meta = {"attempt": 0, "started_at": entered_at, "wall_s": 0.0}
    restored = _restore(tune.get_checkpoint(), device)
    if restored is not None:
        saved, rows, phase_rows = restored
        trial.load_state_dict(saved["trial"])
        meta = dict(saved["adapter"], attempt=saved["adapter"]["attempt"] + 1)
    attempt_t0 = entered_at
    fixed = {
        "study": settings.study,
        "trial_id": trial_id,
        **config_columns(trial.cfg),
        "attempt": meta["attempt"],
        "device": device,
        "node": _node(),
        "ilstudy_version": settings.code_version,
        "torch_version": str(torch.__version__),
    }

    def tune_metrics(row: Mapping[str, Any]) -> dict[str, Any]:
        metrics = {key: row[key] for key in metric_columns(row)}
        wall_s = meta["wall_s"] + time.time() - attempt_t0
        return dict(
            metrics,
            # The records so far, whatever checkpoint Tune restored the trial from (it counts
            # from the one its snapshot named, the trial from the most advanced): ASHA's rungs
            # then fall on the same records as in an unbroken run.
            training_iteration=len(rows),
            attempt=meta["attempt"],
            device=device,
            node=fixed["node"],
            trial_started_at=meta["started_at"],
            trial_wall_s=wall_s,
            reported_at=time.time(),
            ilstudy_version=settings.code_version,
            torch_version=str(torch.__version__),
        )

    remove_stale_checkpoint_dirs()

    def report_with_checkpoint() -> None:
        with tempfile.TemporaryDirectory(prefix=f"{_CKPT_PREFIX}{os.getpid()}-") as directory:
            torch.save(
                {"trial": trial.state_dict(), "adapter": dict(meta)},
                os.path.join(directory, _STATE_FILE),
            )
            pq.write_table(table(rows, METRICS_SCHEMA), os.path.join(directory, ROWS_FILE))
            if phase_rows:
                phases = table(phase_rows, PHASES_SCHEMA)
                pq.write_table(phases, os.path.join(directory, PHASES_FILE))
            # The files first, then the checkpoint: once Tune sees a trial finish, its files
            # are complete; a crash in between leaves rows a restored trial will rewrite.
            if phase_rows:
                write_trial_phases(fs, results, trial_id, phase_rows)
            write_metrics(fs, results, trial_id, rows)
            tune.report(
                tune_metrics(rows[-1]), checkpoint=tune.Checkpoint.from_directory(directory)
            )

    last_checkpoint_t, checkpointed, yielded = time.time(), len(rows), False
    for record in trial.records():
        now, yielded = time.time(), True
        rows.append({**fixed, **metric_columns(record), "reported_at": utc(now)})
        for phase in trial.take_phase_rows():  # the stability rows made before this record
            phase_rows.append({**fixed, **phase_columns(phase), "reported_at": utc(now)})
        final = bool(record["diverged"]) or record["step"] >= trial.cfg.total_steps
        every = settings.checkpoint_every
        due = (every and len(rows) - checkpointed >= every) or (
            now - last_checkpoint_t >= settings.checkpoint_every_s
        )
        if not (final or due):
            tune.report(tune_metrics(rows[-1]))
            continue
        meta["wall_s"] += now - attempt_t0
        attempt_t0 = now
        report_with_checkpoint()
        last_checkpoint_t, checkpointed = time.time(), len(rows)
    if len(rows) > checkpointed:  # the loop ended without its final record: checkpoint anyway
        meta["wall_s"] += time.time() - attempt_t0
        attempt_t0 = time.time()
        report_with_checkpoint()
    elif not yielded and rows:
        # Restored from the final checkpoint (Tune lost the completion): report it again.
        tune.report(tune_metrics(rows[-1]))
