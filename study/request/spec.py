"""What a study remembers (`<storage>/<name>/study.json`), and the resume comparison."""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from study.errors import StudyError

FORMAT = 1


@dataclass(frozen=True)
class StudySpec:
    """Every choice that shapes a study's trials; fixed when the study is created."""

    space: str  # a built-in space's name, or the name of the space in `space_definition`
    searcher: str  # grid | random | optuna | adaptive
    num_samples: int  # grid: repeats with fresh seeds; random/optuna: trials
    overrides: dict[str, Any] = field(default_factory=dict)  # --set, typed by TrialConfig
    smoke: bool = False  # the space's smoke overrides applied
    data_dir: str = ""  # absolute: each trial runs in its own folder, so a relative path breaks
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int = 0  # 0 = as many as resources allow
    max_failures: int = 3  # restarts of a crashed trial from its last checkpoint
    checkpoint_every: int = 10  # records between trial checkpoints; 0 = only at the end
    code_version: str = "unknown"
    created_at: str = ""
    # A space from a file (`--space path.toml`): the study's own copy of it, validated, so that
    # a resume runs and checks the same space after the file changed or moved. None: built-in.
    space_definition: dict[str, Any] | None = None
    # Early stopping (study.plan.schedulers): fifo (none) or asha, racing lr within each K and seed.
    scheduler: str = "fifo"
    grace_period: int = 0  # records before ASHA's first rung; 0 = its default
    reduction_factor: float = 3.0  # ASHA keeps the best 1/η at each rung
    trackers: list[str] = field(default_factory=list)  # mlflow | wandb | tensorboard (views)

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, **dataclasses.asdict(self)}

    @classmethod
    def from_json(cls, payload: dict[str, Any], where: str) -> StudySpec:
        if not isinstance(payload, dict):
            raise StudyError(
                f"{where} is not a study description (a JSON {type(payload).__name__}, "
                "not an object); the study cannot be resumed"
            )
        if payload.get("format") != FORMAT:
            raise StudyError(f"{where}: unknown study format {payload.get('format')!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in payload.items() if k in known})
        except TypeError as exc:
            raise StudyError(f"{where} is not a study description ({exc})") from None


# Options a resume may repeat but not change, with their CLI spelling.
REMEMBERED = {
    "space": "--space",
    "searcher": "--searcher",
    "num_samples": "--num-samples",
    "overrides": "--set",
    "smoke": "--smoke",
    "cpus_per_trial": "--cpus-per-trial",
    "gpus_per_trial": "--gpus-per-trial",
    "max_concurrent": "--max-concurrent",
    "max_failures": "--max-failures",
    "checkpoint_every": "--checkpoint-every",
    "scheduler": "--scheduler",
    "grace_period": "--grace-period",
    "reduction_factor": "--reduction-factor",
    "trackers": "--tracker",
}


def check_same(saved: StudySpec, given: dict[str, Any], name: str) -> None:
    """Refuse a resume whose repeated options differ from what the study remembers."""
    for key, flag in REMEMBERED.items():
        if key not in given or given[key] is None:
            continue
        if key == "space":
            _check_same_space(saved, given[key], name)
            continue
        value, remembered = given[key], getattr(saved, key)
        if key in ("overrides", "trackers"):
            differs = bool(value) and value != remembered
        elif key == "smoke":
            differs = bool(value) and not remembered
        else:
            differs = value != remembered
        if differs:
            raise StudyError(
                f"study {name!r} was created with {flag} {_show(remembered)}, not {_show(value)}; "
                "a resume continues the same study: repeat the same value or leave it out"
            )


# Fields of a space file that do not shape its trials: a renamed or re-described file is the same.
_COSMETIC = ("name", "description", "seconds_per_trial")


def _check_same_space(saved: StudySpec, given: str, name: str) -> None:
    """`--space` repeated on a resume: the same built-in, or a file whose space equals the
    study's stored copy (wherever the file lies now)."""
    from search_spaces import from_file

    keep = "a resume continues the same study: leave --space out (the study keeps its space)"
    if not from_file.is_space_file(given):
        if saved.space_definition is not None:
            raise StudyError(
                f"study {name!r} was created from a space file (space {saved.space!r}), not the "
                f"built-in space {given!r}; {keep}"
            )
        if given != saved.space:
            raise StudyError(
                f"study {name!r} was created with --space {saved.space}, not {given}; "
                "a resume continues the same study: repeat the same value or leave it out"
            )
        return
    if saved.space_definition is None:
        raise StudyError(
            f"study {name!r} was created with the built-in space {saved.space!r}, not the space "
            f"file {given}; {keep}"
        )
    try:
        current = from_file.definition(from_file.load(given))
    except from_file.SpaceFileError as exc:
        raise StudyError(str(exc)) from None
    changed = [
        k
        for k in from_file.differences(saved.space_definition, current)
        if k.split(".")[0] not in _COSMETIC
    ]
    if changed:
        raise StudyError(
            f"space file {given} differs from the space study {name!r} was created with "
            f"(in {', '.join(changed)}); {keep}, or give the file as it was"
        )


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in sorted(value.items())) or "(none)"
    return str(value)


def now_iso() -> str:
    return dt.datetime.now(tz=dt.UTC).isoformat(timespec="seconds")
