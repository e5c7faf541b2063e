"""One trial in-process: data → model → trainer → loop (steps, evaluation, measures, state).

``Trial(config).records()`` yields one record per report; right after each yield,
``state_dict()`` captures exactly what a restored trial needs to continue with the records of
an unbroken run (batches are a pure function of (seed, step), so no RNG state is needed).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from trainables.config import TrialConfig
from trainables.data import Data, batch_indices, load_data, split_validation
from trainables.gauss_newton import SolverMemory, gauss_newton_direction
from trainables.keys import MEASURE_KEYS
from trainables.linearise import accuracy, linearised_grad, linearised_predict, loss_fn
from trainables.measures import (
    centred_alignment,
    empirical_ntk,
    kernel_distance,
    probe_targets,
    relative_change,
)
from trainables.models import build_model
from trainables.optim import SGD, Adam, Optimizer
from trainables.schedule import is_move_step

STATE_VERSION = 2  # 2: initial_train_loss (divergence as a multiple of it)


class Trial:
    """A trial that can be iterated, saved after any record, and restored exactly."""

    def __init__(
        self,
        config: Mapping[str, Any] | TrialConfig,
        device: torch.device | str | None = None,
        data: Data | None = None,
    ):
        """`data`, when given, replaces cfg.dataset (e.g. tensors of CIFAR-10's shape on a
        machine without its files); it is moved to `device` and cfg.dtype as given."""
        self.cfg = cfg = TrialConfig.from_mapping(config)
        self.device = torch.device(device or "cpu")
        if data is None:
            self.data = load_data(cfg, self.device)
        else:  # held out as load_data would, unless the caller's data has its own split
            data = split_validation(data, cfg.val_size, cfg.seed)
            self.data = data.to(self.device, getattr(torch, cfg.dtype))
        self.model = build_model(cfg, tuple(self.data.x_train.shape[1:]), self.data.num_classes)
        self.model.to(self.device)
        if cfg.model == "cnn" and self.device.type == "cpu":
            # channels-last on the CPU (benchmarks/step_cost.py --alternatives): a plain step
            # 0.78-0.82× the contiguous one's, a K=∞ step 0.97-1.06× (neutral); CUDA keeps
            # the default layout until gpu_check measures it there
            self.model.to(memory_format=torch.channels_last)
            self.data = self.data.with_memory_format(torch.channels_last)
        self.theta = dict(self.model.named_parameters())  # θ: what the optimiser moves
        self.theta_s = _clone(self.theta)  # θ_s: the current linearisation point
        self.theta_0 = _clone(self.theta)
        self.optimizer = self._make_optimizer()
        self.solver_memory = SolverMemory()  # GN auto: the last probe's Rayleigh quotient
        self.is_move_step = is_move_step(cfg)
        self.step = 0
        self.feature_updates = 0
        self.at_lin_point = True  # θ == θ_s exactly, so the tangent pass can be skipped
        self.pending_move = False  # θ_s moves before the next step
        self.started = False
        self.done = False
        self.elapsed_before = 0.0
        self._t0 = time.perf_counter()
        self.lin_point_change = 0.0
        self.initial_train_loss = math.nan  # the step-0 record's: divergence is a multiple of it
        self._bad = torch.zeros((), dtype=torch.bool, device=self.device)
        self._since_record = self._fresh_since_record()
        self._phase = {"start": 0, "best": math.inf, "ema": math.nan, "stale": 0}
        self._setup_probe()

    # ---- construction helpers -----------------------------------------------------------
    def _make_optimizer(self) -> Optimizer:
        # torch.optim's arithmetic without its classes, whose first use imports torch._dynamo
        params = list(self.theta.values())
        if self.cfg.optimizer == "adam":
            return Adam(params, lr=self.cfg.lr)
        return SGD(params, lr=self.cfg.lr, momentum=self.cfg.momentum)

    def _setup_probe(self) -> None:
        cfg, data = self.cfg, self.data
        self.kernels: dict[str, Any] = {"K0": None, "prev": None, "prev_step": 0, "cache": None}
        if cfg.probe_size == 0:
            return
        g = torch.Generator().manual_seed(40_000 + cfg.seed)
        idx = torch.randperm(len(data.y_train), generator=g)[: cfg.probe_size].to(self.device)
        self.x_probe, y_probe = data.x_train[idx], data.y_train[idx]
        self.Y_probe = probe_targets(y_probe, data.num_classes, self.data.x_train.dtype)
        v = torch.randn(data.num_classes, generator=g, dtype=torch.float64)
        self.v_probe = (v / v.norm()).to(self.device, self.data.x_train.dtype)

    # ---- the loop -----------------------------------------------------------------------
    def records(self) -> Iterator[dict[str, Any]]:
        """Run to total_steps (or divergence), yielding a record at step 0, every eval_every
        steps and at the end."""
        cfg = self.cfg
        self._t0 = time.perf_counter()
        if not self.started:
            self.started = True
            yield self._record()
        while self.step < cfg.total_steps and not self.done:
            self.advance()
            if self.step % cfg.eval_every == 0 or self.step == cfg.total_steps:
                record = self._record()
                self.done = record["diverged"] or self.step == cfg.total_steps
                yield record

    def advance(self) -> None:
        """One optimiser step on the next batch, with any feature update due before it."""
        if self.pending_move:  # a feature update decided after the previous step
            self._move()
        cfg = self.cfg
        idx = batch_indices(cfg.seed, len(self.data.y_train), cfg.batch_size, self.step)
        idx = idx.to(self.device)
        batch_loss = self._train_step(self.data.x_train[idx], self.data.y_train[idx])
        self.step += 1
        self._after_step(batch_loss)

    def _train_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        if cfg.trainer == "gauss_newton":
            direction, loss, info = gauss_newton_direction(
                self.model, self.theta, x, y, cfg.loss, cfg.damping, cfg.damping_mode,
                cfg.solver, cfg.cg_tol, cfg.cg_max_iter, cfg.exact_max_dim, self.solver_memory,
            )  # fmt: skip
            with torch.no_grad():
                for name, p in self.theta.items():
                    p.sub_(cfg.lr * direction[name])
            self._since_record["cg"] += info.cg_iters
            return loss
        self.optimizer.zero_grad()
        if cfg.trainer == "plain":  # ordinary autograd on the network: the baseline
            loss = loss_fn(cfg.loss, self.model(x), y)
            loss.backward()
        else:
            delta = None if self.at_lin_point else _delta(self.theta, self.theta_s)
            grads, loss, _ = linearised_grad(self.model, self.theta_s, delta, x, y, cfg.loss)
            for p, g in zip(self.theta.values(), grads, strict=True):
                p.grad = g
        self.optimizer.step()
        self.at_lin_point = False
        return loss.detach()

    def _loss_sum(self, value: float = 0.0) -> torch.Tensor:
        # the batch-loss sum stays on the device: reading it every step would sync a GPU
        return torch.tensor(value, dtype=torch.float64, device=self.device)

    def _fresh_since_record(self) -> dict[str, Any]:
        return {"loss": self._loss_sum(), "cg": 0.0, "steps": 0}

    def _after_step(self, batch_loss: torch.Tensor) -> None:
        self._bad |= ~torch.isfinite(batch_loss)
        self._since_record["loss"] += batch_loss
        self._since_record["steps"] += 1
        # moves are applied lazily, at the start of the next step, so that a record taken now
        # evaluates the model that was actually trained, and no move happens after step T
        due = self._should_move(batch_loss)
        self.pending_move = due and self.step < self.cfg.total_steps

    def _should_move(self, batch_loss: torch.Tensor) -> bool:
        cfg = self.cfg
        if (
            not cfg.solve_to_convergence
            or cfg.trainer != "linearised"
            or cfg.schedule == "one_shot"
        ):
            return self.is_move_step(self.step)
        batch_loss = float(batch_loss)  # the convergence test needs the value every step
        phase = self._phase  # converge on an EMA of the batch loss, k caps the phase length
        phase["ema"] = (
            batch_loss if math.isnan(phase["ema"]) else 0.9 * phase["ema"] + 0.1 * batch_loss
        )
        if not math.isfinite(phase["best"]):  # the phase's first step sets the reference
            phase["best"], phase["stale"] = phase["ema"], 0
        else:
            needed = max(cfg.convergence_rtol * abs(phase["best"]), cfg.convergence_atol)
            if phase["ema"] < phase["best"] - needed:
                phase["best"], phase["stale"] = phase["ema"], 0
            else:
                phase["stale"] += 1
        length = self.step - phase["start"]
        return phase["stale"] >= cfg.convergence_patience or length >= cfg.k

    def _move(self) -> None:
        """A feature update: θ_s ← θ (for plain and GN, which train the network itself, θ_s
        is θ at every step, so nothing is copied)."""
        if self.cfg.trainer == "linearised":
            self.lin_point_change = relative_change(self.theta, self.theta_s)
            with torch.no_grad():
                for name, p in self.theta.items():
                    self.theta_s[name].copy_(p)
        else:
            self.theta_s = self.theta
        self.feature_updates += 1
        self.at_lin_point = True
        self.pending_move = False
        self._phase = {"start": self.step, "best": math.inf, "ema": math.nan, "stale": 0}
        if self.cfg.reset_optimizer:
            self.optimizer = self._make_optimizer()

    # ---- evaluation and measures -------------------------------------------------------
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs of the model being trained: f_lin(x; θ, θ_s), or the network f(x; θ)."""
        if self.cfg.trainer != "linearised":
            return linearised_predict(self.model, self.theta, None, x)
        delta = None if self.at_lin_point else _delta(self.theta, self.theta_s)
        return linearised_predict(self.model, self.theta_s, delta, x)

    @torch.no_grad()
    def _record(self) -> dict[str, Any]:
        cfg, data = self.cfg, self.data
        out_train, out_test = self.predict(data.x_train), self.predict(data.x_test)
        train_loss = float(loss_fn(cfg.loss, out_train, data.y_train))
        if self.step == 0:
            self.initial_train_loss = train_loss
        val_loss = val_acc = math.nan
        if data.x_val is not None and len(data.y_val):
            out_val = self.predict(data.x_val)
            val_loss = float(loss_fn(cfg.loss, out_val, data.y_val))
            val_acc = float(accuracy(out_val, data.y_val))
        steps = self._since_record["steps"]
        record = {
            "step": self.step,
            "feature_updates": self.feature_updates,
            "train_loss": train_loss,
            "train_acc": float(accuracy(out_train, data.y_train)),
            "val_loss": val_loss,
            "val_acc": val_acc,
            "test_loss": float(loss_fn(cfg.loss, out_test, data.y_test)),
            "test_acc": float(accuracy(out_test, data.y_test)),
            "diverged": (diverged := self._diverged(train_loss)),
            "elapsed_s": self.elapsed_before + time.perf_counter() - self._t0,
            "batch_loss": float(self._since_record["loss"]) / steps if steps else math.nan,
            "cg_iters": self._since_record["cg"] / steps if steps and cfg.trainer == "gauss_newton" else math.nan,
        }  # fmt: skip
        self._since_record = self._fresh_since_record()
        record.update(self._measures(diverged))
        return record

    def _diverged(self, train_loss: float) -> bool:
        """Non-finite loss or parameters, or the training loss past divergence_factor × its
        value at step 0: a loss of 1e8 is as much a failure as nan, however finite."""
        if bool(self._bad) or not math.isfinite(train_loss):
            return True
        if not all(bool(torch.isfinite(p).all()) for p in self.theta.values()):
            return True
        factor, initial = self.cfg.divergence_factor, self.initial_train_loss
        return bool(factor) and math.isfinite(initial) and train_loss > factor * initial

    def _measures(self, diverged: bool) -> dict[str, float]:
        cfg = self.cfg
        due = self.step % cfg.measure_interval == 0 or self.step == cfg.total_steps
        if cfg.probe_size == 0 or diverged or not due:
            return dict.fromkeys(MEASURE_KEYS, math.nan)
        kernels = self.kernels
        cache = kernels["cache"]
        # the kernel of the model being trained: K(θ_s) for IL, which moves only with θ_s
        linearised = cfg.trainer == "linearised"
        key = self.feature_updates if linearised else -self.step - 1
        if cache is None or cache[0] != key:
            params = self.theta_s if linearised else self.theta
            K = empirical_ntk(self.model, params, self.x_probe, cfg.ntk, self.v_probe)
            kernels["cache"] = cache = (key, K)
        K = cache[1]
        if kernels["K0"] is None:
            kernels["K0"], kernels["prev"], kernels["prev_step"] = K, K, self.step
        dist_prev = kernel_distance(kernels["prev"], K)
        dt = self.step - kernels["prev_step"]
        out = {
            "kernel_distance_init": kernel_distance(kernels["K0"], K),
            "kernel_distance_prev": dist_prev,
            "kernel_velocity": dist_prev / dt if dt else 0.0,
            "kernel_alignment": centred_alignment(K, self.Y_probe),
            "param_change": relative_change(self.theta, self.theta_0),
            "lin_point_change": self.lin_point_change,
        }
        kernels["prev"], kernels["prev_step"] = K, self.step
        return out

    # ---- state --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly after the last yielded record."""
        k = self.kernels
        return {
            "version": STATE_VERSION,
            "config": self.cfg.to_dict(),
            "step": self.step,
            "feature_updates": self.feature_updates,
            "at_lin_point": self.at_lin_point,
            "pending_move": self.pending_move,
            "started": self.started,
            "done": self.done,
            "elapsed_s": self.elapsed_before + time.perf_counter() - self._t0,
            "lin_point_change": self.lin_point_change,
            "initial_train_loss": self.initial_train_loss,
            "bad": bool(self._bad),
            "since_record": {**self._since_record, "loss": float(self._since_record["loss"])},
            "phase": dict(self._phase),
            "theta": _clone(self.theta),
            "theta_s": _clone(self.theta_s),
            "theta_0": _clone(self.theta_0),
            "optimizer": self.optimizer.state_dict(),
            "solver_memory": self.solver_memory.state_dict(),
            "kernels": {"K0": k["K0"], "prev": k["prev"], "prev_step": k["prev_step"], "cache": k["cache"]},
        }  # fmt: skip

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"trial state version {state.get('version')!r} is not {STATE_VERSION}")
        if TrialConfig.from_mapping(state["config"]) != self.cfg:
            raise ValueError("trial state was saved for a different config")
        with torch.no_grad():
            for name, p in self.theta.items():
                p.copy_(state["theta"][name])
        # copies: θ_s is updated in place, and the caller's state must stay as it was
        self.theta_s = {n: t.to(self.device, copy=True) for n, t in state["theta_s"].items()}
        self.theta_0 = {n: t.to(self.device, copy=True) for n, t in state["theta_0"].items()}
        self.optimizer = self._make_optimizer()
        self.optimizer.load_state_dict(state["optimizer"])
        self.solver_memory = SolverMemory()
        if "solver_memory" in state:  # absent in states saved before auto remembered
            self.solver_memory.load_state_dict(state["solver_memory"])
        self.step, self.feature_updates = state["step"], state["feature_updates"]
        self.at_lin_point, self.pending_move = state["at_lin_point"], state["pending_move"]
        self.started, self.done = state["started"], state["done"]
        self.elapsed_before, self.lin_point_change = state["elapsed_s"], state["lin_point_change"]
        self.initial_train_loss = state["initial_train_loss"]
        self._bad = torch.tensor(state["bad"], device=self.device)
        since = state["since_record"]
        self._since_record = {**since, "loss": self._loss_sum(since["loss"])}
        self._phase = dict(state["phase"])
        kernels = dict(state["kernels"])
        to_dev = lambda t: None if t is None else t.to(self.device)  # noqa: E731
        kernels["K0"], kernels["prev"] = to_dev(kernels["K0"]), to_dev(kernels["prev"])
        if kernels["cache"] is not None:
            kernels["cache"] = (kernels["cache"][0], to_dev(kernels["cache"][1]))
        self.kernels = kernels


def _clone(params: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in params.items()}


def _delta(
    theta: Mapping[str, torch.Tensor], theta_s: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    return {name: theta[name].detach() - theta_s[name] for name in theta_s}


def run(
    config: Mapping[str, Any] | TrialConfig,
    state: Mapping[str, Any] | None = None,
    device: torch.device | str | None = None,
) -> Iterator[dict[str, Any]]:
    """Run one trial in-process, yielding one metrics record per report."""
    trial = Trial(config, device)
    if state is not None:
        trial.load_state_dict(state)
    yield from trial.records()
