"""Command-line arguments of `python -m study.run` (the README, "Running a study")."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import NoReturn

from study.errors import StudyInputError
from study.plan.schedulers import SCHEDULERS
from study.plan.trackers import TRACKERS
from study.service import DEFAULT_STORAGE, StudyOptions

SEARCHERS = ("grid", "random", "optuna", "adaptive")


class _Parser(argparse.ArgumentParser):
    """argparse that raises StudyError (one line, exit 2 in the CLI) instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise StudyInputError(f"{message} (see --help)")


def parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m study.run",
        description="Run a hyperparameter study of iterative linearisation on Ray Tune.",
        epilog="Exit codes: 0 all trials finished (diverged counts as finished), 1 some trial "
        "errored, 2 bad input (nothing written), 130 interrupted (resume with --resume).",
    )
    p.add_argument(
        "--space", help="a built-in search space (see --list) or a space file (path.toml)"
    )
    p.add_argument("--list", action="store_true", help="list the spaces and exit")
    p.add_argument("--name", help="study name (default: the space name)")
    p.add_argument(
        "--storage",
        default=DEFAULT_STORAGE,
        help="directory or URI (s3://, gs://) that holds studies (default: ./studies)",
    )
    p.add_argument("--resume", action="store_true", help="continue the study --name")
    p.add_argument(
        "--resume-if-exists",
        action="store_true",
        help="if the study exists (with the same definition), continue it, or report it when "
        "it is finished; else start it",
    )
    p.add_argument(
        "--retry-errored", action="store_true", help="with --resume: retry errored trials too"
    )
    p.add_argument(
        "--address",
        default=os.environ.get("RAY_ADDRESS") or None,
        help="host:port of a running Ray cluster (default: $RAY_ADDRESS, else embedded Ray)",
    )
    p.add_argument("--cpus-per-trial", type=float, help="CPUs per trial (default 1)")
    p.add_argument("--gpus-per-trial", type=float, help="GPUs per trial, e.g. 0.25 (default 0)")
    p.add_argument("--max-concurrent", type=int, help="most trials running at once")
    p.add_argument(
        "--num-samples", type=int, help="grid: repeats with fresh seeds; random/optuna: trials"
    )
    p.add_argument("--searcher", choices=SEARCHERS, help="default: the space's own")
    p.add_argument(
        "--scheduler",
        choices=SCHEDULERS,
        help="asha: stop losing learning rates early, racing only within each K and seed "
        "(default fifo: no early stopping)",
    )
    p.add_argument(
        "--grace-period", type=int, help="asha: records before the first rung (default: T/η²)"
    )
    p.add_argument(
        "--reduction-factor", type=float, help="asha: keep the best 1/η at each rung (default 3)"
    )
    p.add_argument(
        "--tracker",
        dest="trackers",
        action="append",
        choices=tuple(TRACKERS),
        help="also show the runs in mlflow, wandb or tensorboard (repeatable; Parquet stays "
        "the record)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="fix a trial-config key, e.g. --set dataset=cifar10 (repeatable)",
    )
    p.add_argument("--smoke", action="store_true", help="shrink the space to run in seconds")
    p.add_argument(
        "--checkpoint-every", type=int, help="records between trial checkpoints (default 10)"
    )
    p.add_argument("--max-failures", type=int, help="restarts of a crashed trial (default 3)")
    p.add_argument(
        "--break-lock",
        action="store_true",
        help="take over the study lock of a driver on another host that is known to be gone",
    )
    p.add_argument("--verbose", action="store_true", help="show Ray's and the trials' logs")
    return p


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, StudyOptions]:
    """Parse argv; StudyError on anything argparse rejects."""
    args = parser().parse_args(argv)
    options = StudyOptions(
        space=args.space,
        name=args.name,
        storage=args.storage,
        resume=args.resume,
        resume_if_exists=args.resume_if_exists,
        retry_errored=args.retry_errored,
        address=args.address,
        cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial,
        max_concurrent=args.max_concurrent,
        num_samples=args.num_samples,
        searcher=args.searcher,
        scheduler=args.scheduler,
        grace_period=args.grace_period,
        reduction_factor=args.reduction_factor,
        trackers=args.trackers,
        overrides=args.overrides,
        smoke=args.smoke,
        checkpoint_every=args.checkpoint_every,
        max_failures=args.max_failures,
        verbose=args.verbose,
        break_lock=args.break_lock,
    )
    return args, options
