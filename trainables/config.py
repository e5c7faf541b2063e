"""The trial config: one flat mapping of plain values, validated once into a frozen dataclass.

The same keys appear in search spaces, ``--set`` overrides and Parquet columns
(README, "Trial config"). Every field carries its unit and the reason for its default.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

TRAINERS = ("linearised", "gauss_newton", "plain")
SCHEDULES = ("uniform", "geometric", "one_shot")
OPTIMIZERS = ("sgd", "adam")
SOLVERS = ("auto", "exact", "cg")
DAMPING_MODES = ("absolute", "relative")
LR_UNITS = ("absolute", "damped")
DATASETS = ("digits", "mnist5k", "mnist", "fashion_mnist", "cifar10", "npz", "synthetic")
IMAGE_DATASETS = ("digits", "mnist5k", "mnist", "fashion_mnist", "cifar10")  # npz: when 4-D
TORCHVISION_DATASETS = ("mnist", "fashion_mnist", "cifar10")
INITS = ("he", "torch")
MODELS = ("mlp", "cnn")
LOSSES = ("cross_entropy", "mse")
ACTIVATIONS = ("relu", "tanh", "gelu")
NORMS = ("none", "group", "layer")
NTK_KINDS = ("projected", "trace")
DTYPES = ("float32", "float64")
INF_WORDS = ("inf", "infinity", "∞")
# Parquet stores every int as int64, and JSON readers as doubles: ints above 2^53 are refused.
INT_MAX = 2**53
SEED_MAX = 2**32 - 1  # seeds are offset and mixed into torch generator seeds (uint64)


def _choice(*allowed: str) -> dict[str, Any]:
    return {"choices": allowed}


@dataclass(frozen=True)
class TrialConfig:
    """One trial, fully specified. Build it with :meth:`from_mapping` to get validation."""

    # ---- what is trained and how ---------------------------------------------------------
    trainer: str = field(default="linearised", metadata=_choice(*TRAINERS))
    # steps between feature updates (relinearisations); math.inf = never (the fixed NTK model).
    # k=1 is exactly SGD on the network. Values >= total_steps are stored as inf (paper: K >= T is ∞).
    k: float = 10
    # when θ_s moves: every k steps; gaps k, k·growth, k·growth², … (dense early); or plain
    # training up to one_shot_at, then linearised for ever (Fort et al.'s parent/child).
    schedule: str = field(default="uniform", metadata=_choice(*SCHEDULES))
    growth: float = 2.0  # geometric schedule: factor by which successive gaps grow (> 1)
    one_shot_at: int = (
        100  # one_shot schedule: steps of plain training before the single linearisation
    )
    # train each linear model until its batch loss stops improving (k then caps the phase length)
    solve_to_convergence: bool = False
    convergence_patience: int = (
        50  # steps without a `convergence_rtol` improvement that end a phase
    )
    convergence_rtol: float = 1e-3  # relative improvement of the smoothed batch loss that counts…
    convergence_atol: float = 1e-4  # …or absolute, whichever is larger (CE on separable data → 0)

    # ---- optimisation -------------------------------------------------------------------
    optimizer: str = field(default="sgd", metadata=_choice(*OPTIMIZERS))
    lr: float = 0.05  # step size; for gauss_newton the η in θ ← θ − η(G + λI)⁻¹∇L
    momentum: float = 0.0  # SGD heavy-ball momentum, in [0, 1)
    reset_optimizer: bool = False  # clear the inner optimiser's state at every feature update
    total_steps: int = 2000  # optimiser steps T (one minibatch each)
    batch_size: int = 128  # examples per step; 0 = full batch

    # ---- damped Gauss-Newton -------------------------------------------------------------
    damping: float = 1e-3  # λ ≥ 0: absolute, or in units of mean diag(G) when damping_mode=relative
    damping_mode: str = field(default="absolute", metadata=_choice(*DAMPING_MODES))
    # the unit of lr for gauss_newton. absolute: η = lr. damped: η = lr·(1 + λ), λ the step's
    # absolute damping (in the loss's curvature units, those of G's eigenvalues). A GN step
    # with λ ≫ ‖G‖ is SGD of size η/λ, so one absolute η grid cannot serve every λ; in damped
    # units lr is the full GN step size as λ → 0 and the SGD learning rate as λ → ∞, and one
    # lr grid brackets every λ (damping_sweep, paper_fig9).
    lr_units: str = field(default="absolute", metadata=_choice(*LR_UNITS))
    # exact: kernel-form n·c × n·c solve; cg: matrix-free conjugate gradient; auto: exact when it fits
    solver: str = field(default="auto", metadata=_choice(*SOLVERS))
    cg_tol: float = 1e-6  # CG stops when ‖residual‖ ≤ cg_tol · ‖∇L‖
    cg_max_iter: int = 500  # CG iteration cap per step
    exact_max_dim: int = 4096  # auto picks exact while n·c ≤ this (and J fits in memory)

    # ---- data ---------------------------------------------------------------------------
    dataset: str = field(default="digits", metadata=_choice(*DATASETS))
    n_train: int = 0  # deterministic subset size of the training examples left after val; 0 = all
    n_test: int = 0  # deterministic subset size; 0 = all
    # examples held out of the training split for model selection (seeded by `seed`):
    # a fraction when < 1, a count when >= 1 (an integer), 0 = none. Selection never uses test.
    # A quarter, so that mnist5k's 4,000 training digits give 1,000 validation examples: with
    # fewer, learning rates a few examples apart in validation accuracy cannot be told apart.
    val_size: float = 0.25
    data_dir: str = "data"  # where torchvision datasets live (resolved to an absolute path)
    download: bool = False  # download torchvision datasets only when asked
    data_path: str = ""  # dataset=npz: the user's .npz file (resolved to an absolute path)
    # dataset=npz: the file's SHA-256; a study fills it in, and a trial refuses a file that differs
    data_sha256: str = ""

    # ---- model --------------------------------------------------------------------------
    model: str = field(default="mlp", metadata=_choice(*MODELS))
    width: int = 128  # MLP hidden units per layer
    channels: int = 32  # CNN channels in the first block (then ×2, ×4, ×4): ~250k parameters
    depth: int = 2  # MLP hidden layers (0 = a linear model, linear in its parameters)
    activation: str = field(default="relu", metadata=_choice(*ACTIVATIONS))
    norm: str = field(
        default="none", metadata=_choice(*NORMS)
    )  # no train-mode BatchNorm: forward AD
    # he: Kaiming normal (fan-in, the activation's gain; the readout gain 1), zero biases, so a
    # deep ReLU net without normalisation keeps its signal; torch: PyTorch's own layer defaults
    init: str = field(default="he", metadata=_choice(*INITS))
    # α of Chizat & Bach's lazy training: the model trained is α·f(θ) (α·(f(θ) − f(θ₀)) when
    # centred). Large α drives any trainer towards its linearisation; α=1, uncentred, is f itself.
    output_scale: float = 1.0
    center_output: bool = (
        False  # subtract the initial network's output f(θ₀)(x): outputs start at 0
    )
    loss: str = field(default="cross_entropy", metadata=_choice(*LOSSES))
    dtype: str = field(default="float32", metadata=_choice(*DTYPES))

    # a trial has diverged when its loss or a parameter is non-finite, or its full training loss
    # at a record exceeds divergence_factor × the training loss at step 0 (0 = that test off)
    divergence_factor: float = 100.0

    # ---- bookkeeping --------------------------------------------------------------------
    seed: int = 0  # seeds the validation split, subsets, init and batch order
    eval_every: int = 200  # steps between records (full train and test evaluation)
    probe_size: int = 64  # examples in the fixed probe batch for feature-learning measures; 0 = off
    measure_every: int = 0  # steps between measures; 0 = at every record
    # probe kernel: projected (n VJPs, the cheap default) or trace (n·c VJPs); measures.py
    ntk: str = field(default="projected", metadata=_choice(*NTK_KINDS))

    # ------------------------------------------------------------------------------------
    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | TrialConfig | None = None) -> TrialConfig:
        """Validate a flat mapping of plain values; raise ValueError naming key, value and rule."""
        if isinstance(mapping, TrialConfig):
            return mapping
        mapping = dict(mapping or {})
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(mapping) - set(known))
        if unknown:
            raise ValueError(
                f"unknown config key {unknown[0]!r}; allowed keys: {', '.join(sorted(known))}"
            )
        values = {name: _coerce(known[name], value) for name, value in mapping.items()}
        cfg = cls(**values)
        cfg._check()
        return cfg._effective()

    def _effective(self) -> TrialConfig:
        """The same trial with every key it ignores at its default, and K >= T as K = ∞.

        Two mappings that train the same model the same way validate to equal configs, so a
        planner can refuse duplicates and a report never counts a copy as a seed.
        """
        d = TrialConfig()
        ignored: dict[str, Any] = {}
        if self.trainer != "linearised":  # plain and Gauss-Newton relinearise at every step
            ignored |= dict(k=1, schedule=d.schedule, growth=d.growth, one_shot_at=d.one_shot_at)
            ignored |= _defaults(d, "solve_to_convergence", *_CONVERGENCE_KEYS)
        elif self.schedule == "one_shot":  # one linearisation at one_shot_at, never again
            ignored |= dict(k=math.inf, growth=d.growth)
            ignored |= _defaults(d, "solve_to_convergence", *_CONVERGENCE_KEYS)
        elif self.solve_to_convergence:  # phases end on convergence; k only caps their length
            ignored |= dict(schedule="uniform", growth=d.growth)
        if "k" not in ignored and self.k != math.inf and self.k >= self.total_steps:
            # the paper's convention: K >= T is K = ∞ (a cap or first gap >= T never moves θ_s)
            ignored |= dict(k=math.inf)
            if self.schedule == "geometric":
                ignored |= dict(schedule="uniform", growth=d.growth)
        if self.schedule != "one_shot" and "one_shot_at" not in ignored:
            ignored["one_shot_at"] = d.one_shot_at
        if self.schedule != "geometric":
            ignored.setdefault("growth", d.growth)
        if not self.solve_to_convergence:
            ignored |= _defaults(d, *_CONVERGENCE_KEYS)
        if self.trainer != "gauss_newton":
            ignored |= _defaults(d, "damping", "damping_mode", "lr_units", "solver", "cg_tol",
                                 "cg_max_iter", "exact_max_dim")  # fmt: skip
        if self.model == "cnn":
            ignored |= _defaults(d, "width", "depth")
        else:
            ignored |= _defaults(d, "channels")
        if self.probe_size == 0:
            ignored |= _defaults(d, "measure_every", "ntk")
        if self.dataset != "npz":
            ignored |= _defaults(d, "data_path", "data_sha256")
        changed = {k: v for k, v in ignored.items() if getattr(self, k) != v}
        return dataclasses.replace(self, **changed) if changed else self

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return cls().to_dict()

    def to_dict(self) -> dict[str, Any]:
        """Flat plain values; k is an int or the string "inf"."""
        out = dataclasses.asdict(self)
        out["k"] = "inf" if self.k == math.inf else int(self.k)
        return out

    @property
    def k_float(self) -> float:
        return float(self.k)

    @property
    def measure_interval(self) -> int:
        return self.measure_every or self.eval_every

    def _check(self) -> None:
        def bad(key: str, rule: str) -> ValueError:
            return ValueError(f"{key}={getattr(self, key)}: {rule}")

        for f in fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise bad(f.name, f"must be one of {', '.join(choices)}")
        positive = ("total_steps", "eval_every", "width", "channels", "cg_max_iter", "exact_max_dim",
                    "convergence_patience")  # fmt: skip
        for key in positive:
            if getattr(self, key) < 1:
                raise bad(key, "must be an int >= 1")
        for key in ("batch_size", "n_train", "n_test", "probe_size", "measure_every", "depth",
                    "one_shot_at"):  # fmt: skip
            if getattr(self, key) < 0:
                raise bad(key, "must be an int >= 0")
        for f in fields(self):
            if type(f.default) is int and f.name != "k" and getattr(self, f.name) > INT_MAX:
                raise bad(f.name, f"must be at most 2^53 = {INT_MAX}")
        if not 0 <= self.seed <= SEED_MAX:
            raise bad("seed", f"must be an int in [0, 2^32 − 1 = {SEED_MAX}]")
        for key in ("lr", "damping", "cg_tol", "convergence_rtol", "convergence_atol",
                    "val_size", "divergence_factor"):  # fmt: skip
            value = getattr(self, key)
            if not (math.isfinite(value) and value >= 0):
                raise bad(key, "must be a finite number >= 0")
        if self.lr == 0:
            raise bad("lr", "must be > 0")
        if not 0 <= self.momentum < 1:
            raise bad("momentum", "must be in [0, 1)")
        if not (math.isfinite(self.growth) and self.growth > 1):
            raise bad("growth", "must be a finite number > 1")
        if self.val_size >= 1 and not float(self.val_size).is_integer():
            raise bad("val_size", "must be a fraction in [0, 1) or a whole number of examples")
        if self.val_size > INT_MAX:
            raise bad("val_size", f"must be at most 2^53 = {INT_MAX}")
        if 0 < self.divergence_factor <= 1:
            raise bad(
                "divergence_factor", "must be > 1 (a multiple of the initial loss), or 0 = off"
            )
        if not (math.isfinite(self.output_scale) and self.output_scale > 0):
            raise bad("output_scale", "must be a finite number > 0")
        if self.model == "cnn" and self.dataset not in (*IMAGE_DATASETS, "npz"):
            raise bad("model", f"cnn needs an image dataset ({', '.join(IMAGE_DATASETS)}, npz)")
        if self.data_sha256 and not (
            len(self.data_sha256) == 64 and all(c in "0123456789abcdef" for c in self.data_sha256)
        ):
            raise bad("data_sha256", "must be 64 lower-case hex digits, or empty")
        if self.optimizer == "adam" and self.momentum:
            raise bad("momentum", "applies to sgd only; use 0 with adam")
        if self.trainer == "gauss_newton" and (self.optimizer != "sgd" or self.momentum):
            raise bad(
                "optimizer", "gauss_newton takes its own step θ ← θ − lr·d; use sgd, momentum 0"
            )


_CONVERGENCE_KEYS = ("convergence_patience", "convergence_rtol", "convergence_atol")


def _defaults(d: TrialConfig, *keys: str) -> dict[str, Any]:
    return {key: getattr(d, key) for key in keys}


def _coerce(f: dataclasses.Field, value: Any) -> Any:
    """Type one value for field f, accepting the strings a CLI or JSON would give."""
    name = f.name
    if name == "k":
        return _coerce_k(value)
    kind = type(f.default)
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ValueError(f"{name}={value}: must be true or false")
    if kind is int:
        number = _number(name, value, "an int")
        if not float(number).is_integer():
            raise ValueError(f"{name}={value}: must be an int")
        return int(number)
    if kind is float:
        return float(_number(name, value, "a number"))
    if not isinstance(value, str):
        raise ValueError(f"{name}={value}: must be a string")
    return value


def _number(name: str, value: Any, what: str) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{name}={value}: must be {what}")
    if isinstance(value, int | float):
        return value
    try:
        return float(str(value)) if "." in str(value) or "e" in str(value).lower() else int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value}: must be {what}") from None


def _coerce_k(value: Any) -> float:
    rule = "must be an int >= 1 or 'inf'"
    if isinstance(value, str) and value.strip().lower() in INF_WORDS:
        return math.inf
    if isinstance(value, bool):
        raise ValueError(f"k={value}: {rule}")
    if isinstance(value, float) and math.isinf(value) and value > 0:
        return math.inf
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"k={value}: {rule}") from None
    if not (math.isfinite(number) and number.is_integer() and number >= 1):
        raise ValueError(f"k={value}: {rule}")
    return int(number)


def parse_override(text: str) -> tuple[str, Any]:
    """Parse one ``key=value`` override into a typed, validated pair."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ValueError(f"override {text!r}: expected key=value")
    known = {f.name: f for f in fields(TrialConfig)}
    if key not in known:
        raise ValueError(f"unknown config key {key!r}; allowed keys: {', '.join(sorted(known))}")
    value = _coerce(known[key], raw.strip())
    TrialConfig.from_mapping({key: value})  # the value's own rules
    return key, value
