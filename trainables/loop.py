"""One trial in-process: data → model → trainer step → loop (evaluation, measures, state).

``Trial(config).records()`` yields one record per report; right after each yield,
``state_dict()`` captures exactly what a restored trial needs to continue with the records of
an unbroken run, and ``take_phase_rows()`` hands out the stability measures' rows made before
that record (one per measured linearisation point). The pieces: steps.py (one step per
trainer), schedule.py (when θ_s moves), measures.py (feature learning on a probe batch),
stability.py (sharpness and the gap at a feature update), state.py (the state saved).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from trainables.config import TrialConfig
from trainables.data import Data, batch_indices, load_data, split_validation
from trainables.keys import MEASURE_KEYS, STABILITY_KEYS
from trainables.linearise import accuracy, loss_fn
from trainables.measures import Probe, relative_change
from trainables.models import build_model
from trainables.schedule import Phase, Schedule
from trainables.stability import (
    lr_sharpness,
    measure_due,
    network_loss,
    sharpness,
    stability_batch,
    update_losses,
)
from trainables.state import READABLE_STATE_VERSIONS, STATE_VERSION, TrialState, fresh_tally
from trainables.steps import STEPS, Step, make_optimizer


def _in_state(name: str) -> property:
    """An attribute of the trial that lives in its state (tests and benchmarks read them)."""
    return property(
        lambda self: getattr(self.state, name), lambda self, v: setattr(self.state, name, v)
    )


class Trial:
    """A trial that can be iterated, saved after any record, and restored exactly."""

    theta_s = _in_state("theta_s")
    theta_0 = _in_state("theta_0")
    step = _in_state("step")
    feature_updates = _in_state("feature_updates")
    pending_move = _in_state("pending_move")
    solver_memory = _in_state("solver_memory")

    def __init__(
        self,
        config: Mapping[str, Any] | TrialConfig,
        device: torch.device | str | None = None,
        data: Data | None = None,
        stability: bool = True,
    ):
        """`data`, when given, replaces cfg.dataset (e.g. tensors of CIFAR-10's shape on a
        machine without its files); it is moved to `device` and cfg.dtype as given.
        `stability=False` turns the stability measures off (benchmarks time them); they are
        otherwise on whenever the probe is (probe_size > 0)."""
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
            # channels-last is the faster CPU layout for a CNN step (benchmarks/step_cost.py
            # --alternatives); CUDA keeps the default layout until it is measured there
            self.model.to(memory_format=torch.channels_last)
            self.data = self.data.with_memory_format(torch.channels_last)
        self.theta = dict(self.model.named_parameters())  # θ: what the optimiser moves
        self.state = TrialState.start(self.theta, make_optimizer(cfg, self.theta), self.device)
        self.trainer: Step = STEPS[cfg.trainer](cfg, self.model, self.state)
        self.schedule = Schedule(cfg)
        self.probe = None  # the measures' fixed batch, when measures are on
        self.stability_batch = None  # (x, y): the stability measures' batch, when they are on
        if cfg.probe_size:
            self.probe = Probe.sample(self.data, cfg.probe_size, cfg.seed, cfg.ntk)
            if stability:
                self.stability_batch = stability_batch(
                    self.data, cfg.probe_size, cfg.batch_size, cfg.seed
                )
        self._t0 = time.perf_counter()

    # ---- the loop -----------------------------------------------------------------------
    def records(self) -> Iterator[dict[str, Any]]:
        """Run to total_steps (or divergence), yielding a record at step 0, every eval_every
        steps and at the end."""
        cfg, s = self.cfg, self.state
        self._t0 = time.perf_counter()
        if not s.started:
            s.started = True
            if self.stability_batch is not None:  # the initial linearisation point θ_s = θ₀
                self._measure_stability(update=False)
            yield self._record()
        while s.step < cfg.total_steps and not s.done:
            self.advance()
            if s.step % cfg.eval_every == 0 or s.step == cfg.total_steps:
                record = self._record()
                s.done = record["diverged"] or s.step == cfg.total_steps
                yield record

    def advance(self) -> None:
        """One step on the next batch, with any feature update due before it."""
        cfg, s = self.cfg, self.state
        if s.pending_move:  # a feature update decided after the previous step
            self._move()
        idx = batch_indices(cfg.seed, len(self.data.y_train), cfg.batch_size, s.step)
        idx = idx.to(self.device)
        batch_loss = self.trainer.step(self.data.x_train[idx], self.data.y_train[idx])
        s.step += 1
        s.bad |= ~torch.isfinite(batch_loss)
        s.since_record.add(batch_loss, self.trainer.cg_iters)
        # moves are applied lazily, at the start of the next step, so that a record taken now
        # evaluates the model that was actually trained, and no move happens after step T
        due = self.schedule.move_due(s.step, batch_loss, s.phase)
        s.pending_move = due and s.step < cfg.total_steps
        # θ_s will be today's θ: measured now, so that the record at this step carries it
        measuring = s.pending_move and self.stability_batch is not None
        if measuring and measure_due(s.step, s.stability.last_step, cfg.measure_interval):
            self._measure_stability(update=True)

    def _move(self) -> None:
        """A feature update: θ_s ← θ (the step says how), and a new phase."""
        s = self.state
        self.trainer.move()
        s.feature_updates += 1
        s.at_lin_point, s.pending_move = True, False
        s.phase = Phase(start=s.step)
        if self.cfg.reset_optimizer:
            s.optimizer = make_optimizer(self.cfg, self.theta)

    # ---- evaluation and measures -------------------------------------------------------
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs of the model being trained: f_lin(x; θ, θ_s), or the network f(x; θ)."""
        return self.trainer.predict(x)

    @torch.no_grad()
    def _record(self) -> dict[str, Any]:
        cfg, data, s = self.cfg, self.data, self.state
        out_train, out_test = self.predict(data.x_train), self.predict(data.x_test)
        train_loss = float(loss_fn(cfg.loss, out_train, data.y_train))
        if s.step == 0:
            s.initial_train_loss = train_loss
        peak = train_loss if math.isfinite(train_loss) else math.inf
        s.peak_train_loss = peak if math.isnan(s.peak_train_loss) else max(s.peak_train_loss, peak)
        val_loss = val_acc = math.nan
        if data.x_val is not None and len(data.y_val):
            out_val = self.predict(data.x_val)
            val_loss = float(loss_fn(cfg.loss, out_val, data.y_val))
            val_acc = float(accuracy(out_val, data.y_val))
        since, gn = s.since_record, cfg.trainer == "gauss_newton"
        record = {
            "step": s.step,
            "feature_updates": s.feature_updates,
            "train_loss": train_loss,
            "train_acc": float(accuracy(out_train, data.y_train)),
            "val_loss": val_loss,
            "val_acc": val_acc,
            "test_loss": float(loss_fn(cfg.loss, out_test, data.y_test)),
            "test_acc": float(accuracy(out_test, data.y_test)),
            "diverged": (diverged := self._diverged(train_loss)),
            "elapsed_s": self._elapsed_s(),
            "batch_loss": float(since.loss) / since.steps if since.steps else math.nan,
            "cg_iters": since.cg / since.steps if since.steps and gn else math.nan,
            "peak_loss_ratio": peak_loss_ratio(s.peak_train_loss, s.initial_train_loss),
            "val_examples": 0 if data.y_val is None else len(data.y_val),
        }
        s.since_record = fresh_tally(self.device)
        record.update(self._measures(diverged))
        record.update(s.stability.record())
        return record

    def _diverged(self, train_loss: float) -> bool:
        """The outcome rule (:func:`diverged`) for a record at the current step."""
        s = self.state
        finite = not bool(s.bad) and all(bool(torch.isfinite(p).all()) for p in self.theta.values())
        return diverged(
            train_loss,
            s.initial_train_loss,
            finite=finite,
            final=s.step == self.cfg.total_steps,
            factor=self.cfg.divergence_factor,
        )

    def _measures(self, diverged: bool) -> dict[str, float]:
        """The kernel measures, at measure steps (the stability ones come from the state)."""
        cfg, s = self.cfg, self.state
        due = s.step % cfg.measure_interval == 0 or s.step == cfg.total_steps
        keys = [key for key in MEASURE_KEYS if key not in STABILITY_KEYS]
        if self.probe is None or diverged or not due:
            return dict.fromkeys(keys, math.nan)
        # the kernel of the model being trained: K(θ_s) for IL, which moves only with θ_s
        if cfg.trainer == "linearised":
            params, key = s.theta_s, s.feature_updates
        else:
            params, key = self.theta, -s.step - 1
        kernel = self.probe.kernel_measures(self.model, params, key, s.step, s.kernels)
        return {
            **kernel,
            "param_change": relative_change(self.theta, s.theta_0),
            "lin_point_change": s.lin_point_change,
        }

    def _measure_stability(self, update: bool) -> None:
        """Measure the linearisation point θ_s takes now (update: θ_s ← θ is due before the next
        step; else the initial one, θ_s = θ₀) on the stability batch, into the state."""
        cfg, s = self.cfg, self.state
        x, y = self.stability_batch
        lam = sharpness(self.model, self.theta, x, y, cfg.loss)
        if update and cfg.trainer == "linearised":  # the linear model it ends, at θ
            before, after = update_losses(self.model, self.theta, s.theta_s, x, y, cfg.loss)
        else:  # plain and Gauss-Newton train the network itself: there is no linear model
            before, after = math.nan, network_loss(self.model, self.theta, x, y, cfg.loss)
        edge = dict(lr=cfg.lr, optimizer=cfg.optimizer, momentum=cfg.momentum, trainer=cfg.trainer)
        s.stability.add(
            {
                "step": s.step,
                "feature_updates": s.feature_updates + int(update),
                "sharpness": lam,
                "lr_sharpness": lr_sharpness(lam, **edge),
                "lin_gap": after - before,
                "loss_before": before,
                "loss_after": after,
            }
        )

    def take_phase_rows(self) -> list[dict[str, Any]]:
        """The stability measures' rows made since the last call (keys.PHASE_KEYS),
        oldest first. Called after each yielded record, they are that record's and earlier."""
        return self.state.stability.take_rows()

    def _elapsed_s(self) -> float:
        return self.state.elapsed_s + time.perf_counter() - self._t0

    # ---- the probe, for tests and benchmarks --------------------------------------------
    x_probe = property(lambda self: self.probe.x)
    Y_probe = property(lambda self: self.probe.Y_NxC)
    v_probe = property(lambda self: self.probe.v_C)

    # ---- state --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly after the last yielded record."""
        return {
            "version": STATE_VERSION,
            "config": self.cfg.to_dict(),
            **self.state.to_dict(),
            "elapsed_s": self._elapsed_s(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from a state_dict() of a trial with the same config."""
        version = state.get("version")
        if version not in READABLE_STATE_VERSIONS:
            readable = " or ".join(map(str, READABLE_STATE_VERSIONS))
            raise ValueError(
                f"trial state version {version!r} is not {readable}, the ones this code "
                "reads: it was saved by another version of ilstudy"
            )
        if TrialConfig.from_mapping(state["config"]) != self.cfg:
            raise ValueError("trial state was saved for a different config")
        make = lambda: make_optimizer(self.cfg, self.theta)  # noqa: E731
        self.state = TrialState.from_dict(state, self.theta, make, self.device)
        self.trainer = STEPS[self.cfg.trainer](self.cfg, self.model, self.state)


def diverged(
    train_loss: float, initial: float, *, finite: bool, final: bool, factor: float
) -> bool:
    """The outcome rule for a record. Diverged: a non-finite loss or parameter (`finite`
    False), or a training loss past factor × its step-0 value (factor 0: that test off), where
    the trial stops; or, at its final record, a training loss above its step-0 value: a trial
    that ends worse than it began never counts as a clean finish."""
    if not finite or not math.isfinite(train_loss):
        return True
    if not math.isfinite(initial):
        return False
    if factor and train_loss > factor * initial:
        return True
    return final and train_loss > initial


def peak_loss_ratio(peak: float, initial: float) -> float:
    """The largest record training loss so far / the step-0 one (inf when one was not finite)."""
    if math.isinf(peak) or not math.isfinite(initial):
        return math.inf
    if initial <= 0:
        return 1.0 if peak <= 0 else math.inf
    return peak / initial


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
