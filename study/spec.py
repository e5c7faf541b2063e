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

    space: str
    searcher: str  # grid | random | optuna
    num_samples: int  # grid: repeats with fresh seeds; random/optuna: trials
    overrides: dict[str, Any] = field(default_factory=dict)  # --set, typed by TrialConfig
    smoke: bool = False  # the space's smoke overrides applied
    data_dir: str = ""  # absolute: trials run in their own folders (RAY_NOTES trap 5)
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int = 0  # 0 = as many as resources allow
    max_failures: int = 3  # restarts of a crashed trial from its last checkpoint
    checkpoint_every: int = 10  # records between trial checkpoints; 0 = only at the end
    code_version: str = "unknown"
    created_at: str = ""

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
}


def check_same(saved: StudySpec, given: dict[str, Any], name: str) -> None:
    """Refuse a resume whose repeated options differ from what the study remembers."""
    for key, flag in REMEMBERED.items():
        if key not in given or given[key] is None:
            continue
        value, remembered = given[key], getattr(saved, key)
        if key == "overrides":
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


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in sorted(value.items())) or "(none)"
    return str(value)


def now_iso() -> str:
    return dt.datetime.now(tz=dt.UTC).isoformat(timespec="seconds")
