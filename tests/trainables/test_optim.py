"""trainables.optim against torch.optim itself: the same trajectories bit for bit, and states
that load into each other."""

from __future__ import annotations

import copy
import subprocess
import sys
import textwrap

import pytest
import torch

from trainables.optim import SGD, Adam

CASES = {
    "sgd": (lambda ps: torch.optim.SGD(ps, lr=0.1), lambda ps: SGD(ps, lr=0.1)),
    "sgd-momentum": (
        lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9),
        lambda ps: SGD(ps, lr=0.05, momentum=0.9),
    ),
    "adam": (lambda ps: torch.optim.Adam(ps, lr=3e-3), lambda ps: Adam(ps, lr=3e-3)),
}


def _params(dtype: torch.dtype, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shapes = [(7, 5), (5,), (4, 3, 3, 3)]
    ps = [torch.randn(s, generator=g, dtype=dtype) for s in shapes]
    ps[2] = ps[2].contiguous(memory_format=torch.channels_last)  # as a CPU CNN's weights
    return [p.requires_grad_() for p in ps]


def _steps(opt, params: list[torch.Tensor], start: int, count: int) -> None:
    """Deterministic gradients (a function of the step); the bias gets none every third step,
    so both must skip a parameter without a gradient the same way."""
    for step in range(start, start + count):
        opt.zero_grad()
        g = torch.Generator().manual_seed(1000 + step)
        for i, p in enumerate(params):
            if i == 1 and step % 3 == 2:
                continue
            p.grad = torch.randn(p.shape, generator=g, dtype=p.dtype).contiguous(
                memory_format=torch.channels_last if p.ndim == 4 else torch.contiguous_format
            )
        opt.step()


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y), (x - y).abs().max()
        assert x.stride() == y.stride()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", list(CASES))
def test_trajectory_is_torch_optims_bit_for_bit(case, dtype):
    make_torch, make_ours = CASES[case]
    theirs, ours = _params(dtype), _params(dtype)
    reference, opt = make_torch(theirs), make_ours(ours)
    for block in range(4):
        _steps(reference, theirs, 10 * block, 10)
        _steps(opt, ours, 10 * block, 10)
        _same(theirs, ours)
    assert not torch.equal(theirs[0], _params(dtype)[0])  # they really moved


@pytest.mark.parametrize("case", list(CASES))
def test_states_load_into_each_other_and_continue_identically(case):
    make_torch, make_ours = CASES[case]
    # torch.optim → ours
    theirs = _params(torch.float64)
    reference = make_torch(theirs)
    _steps(reference, theirs, 0, 7)
    ours = [p.detach().clone().requires_grad_() for p in theirs]  # clone keeps channels-last
    saved = reference.state_dict()
    opt = make_ours(ours)
    opt.load_state_dict(saved)
    _steps(reference, theirs, 7, 9)
    _steps(opt, ours, 7, 9)
    _same(theirs, ours)
    # ours → torch.optim
    again = [p.detach().clone().requires_grad_() for p in ours]
    back = make_torch(again)
    back.load_state_dict(copy.deepcopy(opt.state_dict()))  # torch.optim keeps the tensors
    _steps(opt, ours, 16, 5)
    _steps(back, again, 16, 5)
    _same(ours, again)


def test_loading_copies_the_callers_state():
    params = _params(torch.float64)
    opt = Adam(params, lr=1e-2)
    _steps(opt, params, 0, 3)
    saved = opt.state_dict()
    before = {k: v.clone() for k, v in saved["state"][0].items()}
    fresh = Adam(_params(torch.float64), lr=1e-2)
    fresh.load_state_dict(saved)
    _steps(fresh, fresh.params, 3, 4)  # updates its state in place
    for key, value in before.items():
        assert torch.equal(saved["state"][0][key], value), key


def test_a_state_for_other_parameters_is_refused():
    opt = SGD(_params(torch.float32), lr=0.1, momentum=0.9)
    other = SGD(_params(torch.float32)[:2], lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="3 parameters"):
        other.load_state_dict(opt.state_dict())


@pytest.mark.slow
def test_trials_do_not_import_torch_dynamo_or_sympy():
    """Every trial process paid these before its first step: torch._dynamo (1.3-3 s), which
    torch.optim's classes and FlopCounterMode import on first use, and sympy (0.4 s), which
    autograd.grad with a tensor grad_outputs imports. Gauss-Newton still imports sympy (the
    exact solver's batched VJP over c cotangents; CG's VJP, where grad_outputs is faster than
    a scalar's backward at hundreds of calls a step); nothing imports dynamo."""
    code = textwrap.dedent(
        """
        import sys
        from trainables import Trial
        def run(cfg):
            trial = Trial({"total_steps": 12, "eval_every": 6, "n_train": 256, **cfg})
            list(trial.records())
            trial.load_state_dict(trial.state_dict())
        for cfg in [dict(trainer="plain"), dict(trainer="plain", optimizer="adam", lr=0.01),
                    dict(trainer="linearised", k=4, momentum=0.9, reset_optimizer=True),
                    dict(trainer="linearised", k="inf", model="cnn", channels=4)]:
            run(cfg)
        print("sympy" if "sympy" in sys.modules else "no sympy")
        # two GN steps with a record between take every path (imports happen on first use);
        # more would only repeat CG's many products on the CNN
        short = dict(total_steps=2, eval_every=1)
        for cfg in [dict(trainer="gauss_newton"), dict(trainer="gauss_newton", solver="auto",
                    model="cnn", channels=4, ntk="trace", **short),
                    dict(trainer="gauss_newton", solver="cg", model="cnn", channels=4, **short)]:
            run(cfg)
        print("dynamo" if "torch._dynamo" in sys.modules else "no dynamo")
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["no", "sympy", "no", "dynamo"]
