"""What a study remembers (`<storage>/<name>/study.json`), and the resume comparison."""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from study.errors import StudyInputError, StudyStorageError

FORMAT = 1


@dataclass(frozen=True)
class StudySpec:
    """Every choice that shapes a study's trials; fixed when the study is created."""

    space: str  # the space's name: a built-in's, or the one in `space_definition`
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
    # The study's own copy of its space, validated (study.request.space.definition), so that a
    # resume runs and checks the same space after its file (or the built-in) changed or moved,
    # and a repeated command can name what differs. None: a built-in, in studies made before
    # built-ins were stored too.
    space_definition: dict[str, Any] | None = None
    space_source: str = ""  # builtin | file | python; "" in older studies (see `source`)
    # Early stopping (study.plan.schedulers): fifo (none) or asha, racing lr within each K and seed.
    scheduler: str = "fifo"
    grace_period: int = 0  # records before ASHA's first rung; 0 = its default
    reduction_factor: float = 3.0  # ASHA keeps the best 1/η at each rung
    trackers: list[str] = field(default_factory=list)  # mlflow | wandb | tensorboard (views)

    @property
    def source(self) -> str:
        """builtin, file or python: where the study's space came from."""
        if self.space_source:
            return self.space_source
        return "builtin" if self.space_definition is None else "file"

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, **dataclasses.asdict(self)}

    @classmethod
    def from_json(cls, payload: dict[str, Any], where: str) -> StudySpec:
        if not isinstance(payload, dict):
            raise StudyStorageError(
                f"{where} is not a study description (a JSON {type(payload).__name__}, "
                "not an object); the study cannot be resumed"
            )
        if payload.get("format") != FORMAT:
            raise StudyStorageError(f"{where}: unknown study format {payload.get('format')!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in payload.items() if k in known})
        except TypeError as exc:
            raise StudyStorageError(f"{where} is not a study description ({exc})") from None


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
            raise StudyInputError(
                f"study {name!r} was created with {flag} {_show(remembered)}, not {_show(value)}; "
                "a resume continues the same study: repeat the same value or leave it out"
            )


def _check_same_space(saved: StudySpec, given: Any, name: str) -> None:
    """`--space` repeated on a resume: the same built-in, file or Space as the study's stored
    copy (a file wherever it lies now); a built-in or file changed since is refused, naming
    what differs."""
    from study.request.space import BUILTIN, FILE, definition, differences, get_space, source_of

    keep = "a resume continues the same study: leave --space out (the study keeps its space)"
    source = source_of(given)
    if source == BUILTIN and saved.source != BUILTIN:
        raise StudyInputError(
            f"study {name!r} was created from a {'space file' if saved.source == FILE else 'Space'} "
            f"(space {saved.space!r}), "
            f"not the built-in space {given!r}; {keep}"
        )
    if source == BUILTIN and given != saved.space:
        raise StudyInputError(
            f"study {name!r} was created with --space {saved.space}, not {given}; "
            "a resume continues the same study: repeat the same value or leave it out"
        )
    if source != BUILTIN and saved.source == BUILTIN:
        shown = f"the space file {given}" if source == FILE else f"the Python space {given.name!r}"
        raise StudyInputError(
            f"study {name!r} was created with the built-in space {saved.space!r}, not {shown}; "
            f"{keep}"
        )
    if saved.space_definition is None:
        return  # an older built-in study: only its name was stored
    changed = differences(saved.space_definition, definition(get_space(given)))
    if changed:
        what = f"space file {given}" if source == FILE else f"space {saved.space!r}"
        raise StudyInputError(
            f"{what} differs from the space study {name!r} was created with "
            f"(in {', '.join(c.split(':')[0] for c in changed)}); {keep}, or give the space "
            "as it was"
        )


# What a repeated command must ask for exactly as the study was made (its defaults filled
# in): these shape its trials. The rest (resources, trackers, data_dir) are compared as on a
# resume: only when given.
DEFINING = ("searcher", "num_samples", "smoke", "scheduler", "grace_period", "reduction_factor")


def definition_differences(saved: StudySpec, wanted: StudySpec) -> list[str]:
    """How the study a command asks for (`wanted`, as a new study) differs from the existing
    one (`saved`), as `key: saved -> wanted`; empty when it is the same study."""
    from study.request.space import differences

    out = []
    if saved.space != wanted.space and (saved.source, wanted.source) != ("file", "file"):
        out.append(f"space: {saved.space} -> {wanted.space}")
    elif saved.space_definition is None or wanted.space_definition is None:
        if saved.source != wanted.source:  # an older built-in study: only its name is known
            out.append(f"space: the built-in {saved.space} -> a {wanted.source} space")
    else:
        out += [f"space {d}" for d in differences(saved.space_definition, wanted.space_definition)]
    for key in DEFINING:
        if getattr(saved, key) != getattr(wanted, key):
            out.append(f"{REMEMBERED[key]}: {getattr(saved, key)} -> {getattr(wanted, key)}")
    if saved.overrides != wanted.overrides:
        out.append(f"--set: {_show(saved.overrides)} -> {_show(wanted.overrides)}")
    return out


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in sorted(value.items())) or "(none)"
    return str(value)


def now_iso() -> str:
    return dt.datetime.now(tz=dt.UTC).isoformat(timespec="seconds")
