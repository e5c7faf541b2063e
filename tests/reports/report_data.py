"""Synthetic study results, written the way the study service writes them.

``results/metrics/<trial_id>.parquet`` (one file per trial, one row per reported step) and
``results/trials.parquet`` (one row per trial), each column with the role the service's
schema gives it (``study.results``), as the service's own files carry it. Final test accuracy follows the logistic model of ``reports._fit`` with known parameters, so a
fit can be checked against the truth.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from study.results import METRICS_SCHEMA, TRIALS_SCHEMA, roles

INF = math.inf
# Metrics the trainer records in newer layouts; a schema that lacks them (a checkout where the
# service's side has not landed) gets them here, with the role the service gives them.
NEW_METRICS = {"peak_loss_ratio": pa.float64(), "val_examples": pa.int64()}


def _with_new_metrics(schema: pa.Schema) -> pa.Schema:
    missing = [n for n in NEW_METRICS if n not in schema.names]
    for name in missing:
        schema = schema.append(pa.field(name, NEW_METRICS[name], metadata={b"role": b"metric"}))
    return schema


METRICS = _with_new_metrics(METRICS_SCHEMA)
TRIALS = _with_new_metrics(TRIALS_SCHEMA)
# column → role over both tables, as the service writes them
ROLES = {**roles(METRICS), **roles(TRIALS)}


@dataclass
class Truth:
    """The parameters the data are drawn from: acc(N) = a_inf + (a_1 - a_inf)·σ(s·ln(N/n50))."""

    n50: float = 40.0
    slope: float = 2.0
    a_inf: float = 0.80
    a_1: float = 0.95
    noise: float = 0.004  # per-seed standard deviation of final test accuracy

    def acc(self, n: float) -> float:
        if n <= 0:
            return self.a_inf
        return self.a_inf + (self.a_1 - self.a_inf) / (1 + (n / self.n50) ** -self.slope)

    def n_q(self, q: float) -> float:
        return self.n50 * (q / (1 - q)) ** (1 / self.slope)


BASE_CONFIG = {
    "trainer": "linearised",
    "schedule": "uniform",
    "optimizer": "sgd",
    "lr": 0.05,
    "momentum": 0.0,
    "batch_size": 128,
    "damping": 1e-3,
    "solver": "auto",
    "dataset": "digits",
    "model": "mlp",
    "loss": "cross_entropy",
    "eval_every": 100,
    "probe_size": 64,
    "measure_every": 0,
    "init": "he",
    "output_scale": 1.0,
    "center_output": False,
    "val_size": 200,
    "data_path": "",
    "divergence_factor": 1e3,
}
# provenance: never config, so never a grouping key
PROVENANCE = {"data_sha256": "0" * 64}


@dataclass
class Spec:
    """What to generate. Trial ids are ``<study>_<index>``."""

    study: str = "k_sweep"
    ks: Iterable[float] = (1, 2, 4, 5, 8, 10, 20, 25, 40, 50, 100, 200, INF)
    seeds: Iterable[int] = (0, 1, 2, 3)
    total_steps: Iterable[int] = (1000,)
    truth: Truth = field(default_factory=Truth)
    plain: Iterable[str] = ("sgd", "adam")  # plain-trainer baselines, one per optimizer
    gn_dampings: Iterable[float] = ()  # Gauss-Newton trials over damping λ
    gn_lrs: Iterable[float] = (0.1, 1.0)
    probe: bool = True  # write kernel_distance_init and friends
    running: int = 0  # this many linearised trials (1 < K < ∞) stop half way, status RUNNING
    diverged: int = 0  # this many extra trials diverge
    errored: int = 0  # this many extra trials error after a few rows
    trials_table: bool = True  # write results/trials.parquet
    extra_config: dict = field(default_factory=dict)
    lrs: Iterable[float] = (0.05,)  # linearised and plain trials at each
    # (k, lr) -> (test accuracy shift, validation accuracy shift) of that cell's trials
    shift: Callable[[float, float], tuple[float, float]] | None = None
    val: bool = True  # write val_loss and val_acc (results from before the split lack them)
    duplicates: int = 0  # copies of the K=∞ seed-0 trial: one exact, then K = 2T (old files)
    stopped: int = 0  # this many extra trials stopped by an early-stopping scheduler
    diverge_at: dict = field(default_factory=dict)  # config of the diverged trials (default K=3)
    plain_lrs: Iterable[float] | None = None  # the plain arms' own lr grid (default: lrs)
    # (damping, lr) -> accuracy shift of that Gauss-Newton cell (test, train and val alike)
    gn_shift: Callable[[float, float], float] | None = None
    val_examples: int | None = None  # write val_examples (newer layouts) with this count
    peak: bool = False  # write peak_loss_ratio as the trainer does (newer layouts)


def make_study(root: Path, spec: Spec | None = None, **changes) -> Path:
    """Write a study folder under `root` and return it."""
    spec = spec or Spec(**changes)
    study_dir = Path(root) / spec.study
    metrics_dir = study_dir / "results" / "metrics"
    metrics_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    trials = []
    for config, final_acc, fate in _configs(spec, rng):
        trial_id = f"{spec.study}_{len(trials):05d}"
        rows = [{"study": spec.study, "trial_id": trial_id, **row}
                for row in _rows(spec, config, final_acc, fate, rng)]  # fmt: skip
        write_parquet(pa.Table.from_pylist(rows), metrics_dir / f"{trial_id}.parquet", METRICS)
        last = dict(rows[-1])
        status = {"ok": "TERMINATED", "running": "RUNNING"}.get(fate, fate.upper())
        if fate == "stopped":
            status = "STOPPED"
        trials.append({**last, "status": status, "started_at": pd.Timestamp("2025-01-01"),
                       "finished_at": pd.Timestamp("2025-01-01 00:01"), "wall_s": 60.0})  # fmt: skip
    if spec.trials_table:
        table = pd.DataFrame(trials).drop(columns=["step", "elapsed_s"])
        write_parquet(table, study_dir / "results" / "trials.parquet", TRIALS)
    return study_dir


def write_parquet(frame: pd.DataFrame | pa.Table, path: Path, schema: pa.Schema) -> None:
    """`frame` as Parquet, each column with `schema`'s field metadata (its role) and the file
    with `schema`'s metadata (the layout version); a column `schema` lacks is an error."""
    table = (
        frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, preserve_index=False)
    )
    extra = [name for name in table.column_names if name not in schema.names]
    if extra:
        raise KeyError(f"{extra[0]!r} is no column of the results layout")
    fields = [f.with_metadata(schema.field(f.name).metadata) for f in table.schema]
    pq.write_table(
        pa.Table.from_arrays(table.columns, schema=pa.schema(fields, schema.metadata)), path
    )


def _configs(spec: Spec, rng: np.random.Generator):
    """(config, final test acc, fate) per trial; fate is ok, running, diverged or errored."""
    base = {**BASE_CONFIG, **spec.extra_config}
    out = []
    shift = spec.shift or (lambda k, lr: (0.0, 0.0))
    for total in spec.total_steps:
        for lr in spec.lrs:
            for k in spec.ks:
                n = 0 if math.isinf(k) else math.ceil(total / k) - 1  # final feature_updates
                for seed in spec.seeds:
                    acc = spec.truth.acc(n) + spec.truth.noise * rng.standard_normal()
                    acc += shift(float(k), lr)[0]
                    cfg = {**base, "lr": lr, "k": float(k), "total_steps": total, "seed": seed}
                    out.append((cfg, acc, "ok"))
            for optimizer in spec.plain if spec.plain_lrs is None else ():
                for seed in spec.seeds:
                    cfg = {**base, "trainer": "plain", "optimizer": optimizer, "k": 1.0, "lr": lr}
                    acc = spec.truth.a_1 + (0.01 if optimizer == "adam" else 0.0)
                    acc += spec.truth.noise * rng.standard_normal() + shift(1.0, lr)[0]
                    out.append(({**cfg, "total_steps": total, "seed": seed}, acc, "ok"))
        for lr in spec.plain_lrs or ():
            for optimizer in spec.plain:
                for seed in spec.seeds:
                    cfg = {**base, "trainer": "plain", "optimizer": optimizer, "k": 1.0, "lr": lr}
                    acc = spec.truth.a_1 + spec.truth.noise * rng.standard_normal()
                    acc += shift(1.0, lr)[0]
                    out.append(({**cfg, "total_steps": total, "seed": seed}, acc, "ok"))
        for lr in spec.gn_lrs if spec.gn_dampings else ():
            for damping in spec.gn_dampings:
                for seed in spec.seeds:
                    cfg = {**base, "trainer": "gauss_newton", "k": 1.0, "lr": lr}
                    sharp = 1 / (1 + (damping / 1e-2) ** -1.0)  # better with large damping
                    acc = 0.7 + 0.2 * sharp + 0.05 * min(lr, 1.0) + 0.003 * rng.standard_normal()
                    acc += spec.gn_shift(damping, lr) if spec.gn_shift else 0.0
                    cfg |= {"damping": damping, "total_steps": total, "seed": seed}
                    out.append((cfg, acc, "ok"))
    lazy = [(c, a) for c, a, _ in out if c["trainer"] == "linearised" and math.isinf(c["k"])
            and c["seed"] == next(iter(spec.seeds), None)]  # fmt: skip
    for j in range(spec.duplicates if lazy else 0):
        cfg, acc = lazy[0]
        k = cfg["k"] if j == 0 else 2.0 * cfg["total_steps"]  # K ≥ T: the same trial as K=∞
        out.append(({**cfg, "k": k}, acc, "ok"))
    # running trials: K=2 first, so the K=1 and K=∞ references stay complete
    middle = [i for i, (c, _, _) in enumerate(out)
              if c["trainer"] == "linearised" and 1 < c["k"] < INF]  # fmt: skip
    for i in middle[: spec.running]:
        out[i] = (out[i][0], out[i][1], "running")
    first = {**base, "k": 3.0, "total_steps": next(iter(spec.total_steps)), "seed": 0}
    for j in range(spec.diverged):
        out.append(({**first, "seed": 100 + j, **spec.diverge_at}, math.nan, "diverged"))
    for j in range(spec.errored):
        out.append(({**first, "k": 3.0, "seed": 200 + j}, math.nan, "error"))
    for j in range(spec.stopped):
        out.append(({**first, "k": 3.0, "seed": 300 + j}, spec.truth.a_inf, "stopped"))
    return out


def _rows(spec: Spec, config: dict, final_acc: float, fate: str, rng: np.random.Generator):
    total, k, every = config["total_steps"], config["k"], config["eval_every"]
    steps = list(range(0, total + 1, every))
    if fate in ("running", "stopped"):
        steps = steps[: len(steps) // 2]
    elif fate in ("diverged", "error"):
        steps = steps[:3]
    n_final = 0 if math.isinf(k) else math.ceil(total / k) - 1
    rows = []
    for i, step in enumerate(steps):
        progress = 1 - math.exp(-5 * step / total)
        test_acc = 0.1 + (final_acc - 0.1) * progress if fate != "diverged" else 0.1
        train_acc = min(1.0, test_acc + 0.04 * progress)
        # θ_s moves after steps K, 2K, … < T, applied before the next step trains
        updates = 0 if math.isinf(k) or step == 0 else math.ceil(step / k) - 1
        loss = -math.log(max(test_acc, 1e-3))
        val_shift = (spec.shift or (lambda k, lr: (0.0, 0.0)))(float(k), config["lr"])
        # validation tracks test up to the cell's chosen offset (minus its test shift)
        val_acc = test_acc + progress * (val_shift[1] - val_shift[0])
        row = {**config, "step": step, "feature_updates": int(updates),
               "train_loss": 0.8 * loss, "train_acc": train_acc,
               "test_loss": loss, "test_acc": test_acc,
               "diverged": False, "elapsed_s": 0.01 * step, **PROVENANCE}  # fmt: skip
        if spec.val:
            row |= {"val_loss": -math.log(max(val_acc, 1e-3)), "val_acc": val_acc}
        if spec.val_examples is not None:
            row["val_examples"] = spec.val_examples
        if fate == "diverged" and i == len(steps) - 1:
            row |= {"diverged": True, "train_loss": math.inf, "test_loss": math.nan}
        if spec.probe:
            drift = 0.5 * (1 - math.exp(-n_final / 50)) * progress
            row |= {
                "kernel_distance_init": drift + 0.01 * rng.random(),
                "kernel_distance_prev": 0.01 * rng.random(),
                "kernel_velocity": 1e-4 * rng.random(),
                "kernel_alignment": 0.3 + 0.2 * progress,
                "param_change": 0.1 * progress,
                "lin_point_change": 0.05 * progress,
            }
        rows.append(row)
    if spec.peak:  # the largest train loss so far over step 0's, as the trainer records it
        first = rows[0]["train_loss"]
        peak = 0.0
        for row in rows:
            peak = max(peak, row["train_loss"] if math.isfinite(row["train_loss"]) else math.inf)
            row["peak_loss_ratio"] = peak / first
    return rows


def rewrite(study: Path, change: Callable[[pd.DataFrame], pd.DataFrame]) -> None:
    """Apply `change` to every metrics file and to trials.parquet, keeping each file's roles
    (a study written by an older trainer, or one a test bends to a case it needs)."""
    results = study / "results"
    files = [*(results / "metrics").glob("*.parquet"), results / "trials.parquet"]
    for file in (f for f in files if f.is_file()):
        write_parquet(change(pd.read_parquet(file)), file, pq.read_schema(file))
