"""SGD and Adam exactly as `torch.optim` computes them, without `torch.optim`'s classes.

The first call of any `torch.optim.Optimizer` method imports `torch._dynamo` (sympy, fx and
more), a slow import that every Ray actor would pay on its first trial, once per process, on
the critical path of every study. The classes here call the kernels `torch.optim`'s own classes
call (`torch.optim.sgd.sgd`, `torch.optim.adam.adam`) with `torch.optim`'s defaults, so the
parameters follow `torch.optim.SGD` / `torch.optim.Adam` bit for bit (tested against them), and
`state_dict()` has `torch.optim`'s layout: states saved by either load into the other.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import torch
from torch.optim.adam import adam
from torch.optim.sgd import sgd

ADAM_BETAS = (0.9, 0.999)  # torch.optim.Adam's defaults
ADAM_EPS = 1e-8


class Optimizer(Protocol):
    """What the trainers need of an optimiser."""

    def zero_grad(self) -> None: ...
    def step(self) -> None: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None: ...


class _Functional:
    """Parameters, a learning rate and per-parameter state keyed by position."""

    def __init__(self, params: Iterable[torch.Tensor], lr: float):
        self.params = list(params)
        if not self.params:
            raise ValueError("the optimiser got no parameters")
        self.lr = lr
        self.state: dict[int, dict[str, torch.Tensor]] = {}

    def hyperparameters(self) -> dict[str, Any]:
        raise NotImplementedError

    def zero_grad(self) -> None:
        """Drop the gradients (torch.optim's default, set_to_none=True)."""
        for p in self.params:
            p.grad = None

    def _with_grad(self) -> list[int]:
        return [i for i, p in enumerate(self.params) if p.grad is not None]

    def state_dict(self) -> dict[str, Any]:
        """`torch.optim`'s layout: {"state": {index: {...}}, "param_groups": [{..., "params"}]}."""
        group = {**self.hyperparameters(), "params": list(range(len(self.params)))}
        return {
            "state": {i: dict(s) for i, s in self.state.items()},
            "param_groups": [group],
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Load a state saved by this class or by the matching `torch.optim` class. Tensors
        are copied (the caller's state stays as it was) onto each parameter's device, and
        floating ones other than `step` to its dtype, as `torch.optim` does."""
        groups = state_dict["param_groups"]
        saved = [i for g in groups for i in g["params"]]
        if len(groups) != 1 or len(saved) != len(self.params):
            raise ValueError(
                f"optimiser state has {len(saved)} parameters in {len(groups)} group(s); "
                f"this optimiser has {len(self.params)} in one"
            )
        position = {index: n for n, index in enumerate(saved)}
        state: dict[int, dict[str, torch.Tensor]] = {}
        for index, values in state_dict["state"].items():
            p = self.params[position[index]]
            state[position[index]] = {
                key: _to_param(key, value, p) for key, value in values.items()
            }
        self.state = state


def _to_param(key: str, value: Any, p: torch.Tensor) -> Any:
    if not isinstance(value, torch.Tensor):
        return value
    if key == "step":
        return value.clone()
    dtype = p.dtype if value.is_floating_point() else value.dtype
    return value.to(device=p.device, dtype=dtype, copy=True)


class SGD(_Functional):
    """`torch.optim.SGD(params, lr, momentum)` (no dampening, Nesterov or weight decay)."""

    def __init__(self, params: Iterable[torch.Tensor], lr: float, momentum: float = 0.0):
        super().__init__(params, lr)
        self.momentum = momentum

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "lr": self.lr, "momentum": self.momentum, "dampening": 0, "weight_decay": 0,
            "nesterov": False, "maximize": False, "foreach": None, "differentiable": False,
            "fused": None,
        }  # fmt: skip

    @torch.no_grad()
    def step(self) -> None:
        live = self._with_grad()
        params = [self.params[i] for i in live]
        grads = [p.grad for p in params]
        # torch.optim.SGD passes an empty buffer list when there is no momentum
        buffers = [self.state.get(i, {}).get("momentum_buffer") for i in live]
        sgd(
            params, grads, buffers if self.momentum else [],
            weight_decay=0.0, momentum=self.momentum, lr=self.lr, dampening=0.0,
            nesterov=False, maximize=False, has_sparse_grad=False, foreach=None, fused=None,
        )  # fmt: skip
        if self.momentum:
            for i, buffer in zip(live, buffers, strict=True):
                self.state.setdefault(i, {})["momentum_buffer"] = buffer


class Adam(_Functional):
    """`torch.optim.Adam(params, lr)` with its default betas, eps and no weight decay."""

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "lr": self.lr, "betas": ADAM_BETAS, "eps": ADAM_EPS, "weight_decay": 0,
            "amsgrad": False, "maximize": False, "foreach": None, "capturable": False,
            "differentiable": False, "fused": None, "decoupled_weight_decay": False,
        }  # fmt: skip

    @torch.no_grad()
    def step(self) -> None:
        live = self._with_grad()
        params = [self.params[i] for i in live]
        for i, p in zip(live, params, strict=True):
            if not self.state.get(i):
                self.state[i] = {
                    # as torch.optim.Adam: a CPU scalar in the default scalar dtype
                    "step": torch.tensor(0.0, dtype=_scalar_dtype(), device="cpu"),
                    "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                    "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
                }
        states = [self.state[i] for i in live]
        adam(
            params, [p.grad for p in params],
            [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states], [],
            [s["step"] for s in states],
            amsgrad=False, has_complex=any(torch.is_complex(p) for p in params),
            beta1=ADAM_BETAS[0], beta2=ADAM_BETAS[1], lr=self.lr, weight_decay=0.0,
            eps=ADAM_EPS, maximize=False, foreach=None, capturable=False,
            differentiable=False, fused=None, decoupled_weight_decay=False,
        )  # fmt: skip


def _scalar_dtype() -> torch.dtype:
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
