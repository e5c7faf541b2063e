"""Everything a trial saves after a record, as one dataclass, and its torch-saveable layout.

The batches are a pure function of (seed, step), so no RNG state is saved: a trial restored from
:meth:`TrialState.to_dict` continues with exactly the records of an unbroken run.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from trainables.gauss_newton import SolverMemory
from trainables.jacobian import Params
from trainables.measures import KernelCache
from trainables.optim import Optimizer
from trainables.schedule import Phase
from trainables.stability import StabilityState

# 2: initial_train_loss (divergence as a multiple of it); 3: peak_train_loss and stability.
# A version-2 state still loads: the fields it lacks get defaults (TrialState.from_dict).
STATE_VERSION = 3
READABLE_STATE_VERSIONS = (2, 3)


@dataclass
class Tally:
    """What the steps since the last record add up to."""

    loss: torch.Tensor  # the batch losses' sum, on the device: a read per step would sync a GPU
    cg: float = 0.0  # CG iterations
    steps: int = 0

    def add(self, batch_loss: torch.Tensor, cg_iters: int) -> None:
        self.loss += batch_loss
        self.cg += cg_iters
        self.steps += 1


@dataclass
class TrialState:
    """A trial's mutable state: the parameters, the optimiser, the schedule and measure state,
    and the loop's counters. `theta` is the model's own parameters, trained in place."""

    theta: Params  # θ: what the optimiser moves
    theta_s: Params  # θ_s: the current linearisation point (θ itself for plain and GN)
    theta_0: Params  # θ at step 0, for param_change
    optimizer: Optimizer
    solver_memory: SolverMemory  # GN auto: the last probe's Rayleigh quotient
    since_record: Tally
    bad: torch.Tensor  # a non-finite batch loss so far (kept on the device, like Tally.loss)
    phase: Phase = dataclasses.field(default_factory=Phase)
    kernels: KernelCache = dataclasses.field(default_factory=KernelCache)
    stability: StabilityState = dataclasses.field(default_factory=StabilityState)
    step: int = 0
    feature_updates: int = 0  # moves of θ_s so far
    at_lin_point: bool = True  # θ == θ_s exactly, so the tangent pass can be skipped
    pending_move: bool = False  # θ_s moves before the next step
    started: bool = False  # the step-0 record was yielded
    done: bool = False  # the last record was yielded
    elapsed_s: float = 0.0  # training seconds before this process's run
    lin_point_change: float = 0.0  # ‖θ_s − θ_s,prev‖ / ‖θ_s,prev‖ at the latest move
    initial_train_loss: float = math.nan  # the step-0 record's: divergence is a multiple of it
    peak_train_loss: float = math.nan  # the largest record train_loss so far (inf: non-finite)

    @classmethod
    def start(cls, theta: Params, optimizer: Optimizer, device: torch.device) -> TrialState:
        """The state before step 0: θ_s = θ_0 = θ."""
        return cls(
            theta=theta,
            theta_s=_clone(theta),
            theta_0=_clone(theta),
            optimizer=optimizer,
            solver_memory=SolverMemory(),
            since_record=fresh_tally(device),
            bad=torch.zeros((), dtype=torch.bool, device=device),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain values and tensors that torch.save can write (parameters copied)."""
        tally, kernels = self.since_record, self.kernels
        return {
            **{name: getattr(self, name) for name in _plain_fields()},
            "theta": _clone(self.theta),
            "theta_s": _clone(self.theta_s),
            "theta_0": _clone(self.theta_0),
            "optimizer": self.optimizer.state_dict(),
            "solver_memory": self.solver_memory.state_dict(),
            "since_record": {"loss": float(tally.loss), "cg": tally.cg, "steps": tally.steps},
            "bad": bool(self.bad),
            "phase": dataclasses.asdict(self.phase),
            "kernels": {  # the kernels themselves, not copies: they are replaced, never changed
                "K0": kernels.K0,
                "prev": kernels.prev,
                "prev_step": kernels.prev_step,
                "cache": kernels.cache,
            },
            "stability": self.stability.to_dict(),
        }

    @classmethod
    def from_dict(
        cls,
        saved: Mapping[str, Any],
        theta: Params,
        make_optimizer: Callable[[], Optimizer],
        device: torch.device,
    ) -> TrialState:
        """The state `to_dict` saved, with θ copied into `theta` (the model's parameters) and
        every tensor copied onto `device`: the caller's `saved` stays as it was. A version-2
        state has no stability measures (fresh ones) and no peak loss: its initial loss, the
        one record loss it kept, stands in."""
        with torch.no_grad():
            for name, p in theta.items():
                p.copy_(saved["theta"][name])
        optimizer = make_optimizer()
        optimizer.load_state_dict(saved["optimizer"])
        solver_memory = SolverMemory()
        if "solver_memory" in saved:  # absent in states saved before auto remembered
            solver_memory.load_state_dict(saved["solver_memory"])
        since = saved["since_record"]
        since_record = fresh_tally(device, since["loss"])
        since_record.cg, since_record.steps = since["cg"], since["steps"]
        kernels = saved["kernels"]
        cache = kernels["cache"]
        if cache is not None:
            cache = (cache[0], _to(cache[1], device))
        plain = {name: saved[name] for name in _plain_fields() if name not in _ADDED_IN_3}
        plain |= {"peak_train_loss": saved.get("peak_train_loss", saved["initial_train_loss"])}
        return cls(
            **plain,
            theta=theta,
            theta_s={n: t.to(device, copy=True) for n, t in saved["theta_s"].items()},
            theta_0={n: t.to(device, copy=True) for n, t in saved["theta_0"].items()},
            optimizer=optimizer,
            solver_memory=solver_memory,
            since_record=since_record,
            bad=torch.tensor(saved["bad"], device=device),
            phase=Phase(**saved["phase"]),
            kernels=KernelCache(
                _to(kernels["K0"], device),
                _to(kernels["prev"], device),
                kernels["prev_step"],
                cache,
            ),
            stability=StabilityState.from_dict(saved.get("stability")),
        )


def _plain_fields() -> list[str]:
    """The fields saved as they are: all but the tensors and objects with a layout of their own."""
    own_layout = {"theta", "theta_s", "theta_0", "optimizer", "solver_memory", "since_record",
                  "bad", "phase", "kernels", "stability"}  # fmt: skip
    return [f.name for f in dataclasses.fields(TrialState) if f.name not in own_layout]


_ADDED_IN_3 = {"peak_train_loss"}  # plain fields a version-2 state lacks (given defaults)


def fresh_tally(device: torch.device, loss: float = 0.0) -> Tally:
    """A tally of no steps (or of a saved loss sum), its sum in float64 on `device`."""
    return Tally(torch.tensor(loss, dtype=torch.float64, device=device))


def _clone(params: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in params.items()}


def _to(t: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    return None if t is None else t.to(device)
