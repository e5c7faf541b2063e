"""The user's own data (dataset=npz): read and validate an .npz file with numpy alone.

No torch here, so a study driver can refuse a bad file before anything is created.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


class DataFileError(ValueError):
    """The user's data file (dataset=npz) is missing, unreadable or malformed."""


def file_sha256(path: str | Path) -> str:
    """The file's SHA-256 as 64 hex digits."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_npz(path: str, expected_sha256: str = "") -> tuple[dict[str, np.ndarray], int]:
    """(arrays x_train, y_train, x_test, y_test; number of classes C), validated.

    Images are (N, C, H, W) or (N, H, W); 2-D arrays are flat features. Labels are integers
    0 … C−1 with C = the largest label + 1. DataFileError names the file and what is wrong; a
    file whose SHA-256 is not `expected_sha256` (when given) is refused.
    """
    if not path:
        raise DataFileError("dataset=npz needs data_path=FILE.npz, the file of your arrays")
    file = Path(path).expanduser()
    where = f"data_path={path}"
    if not file.is_file():
        raise DataFileError(f"{where}: no such file")
    if expected_sha256 and file_sha256(file) != expected_sha256:
        raise DataFileError(f"{where}: the file changed since the study recorded its SHA-256")
    try:
        with np.load(file, allow_pickle=False) as npz:
            missing = [k for k in NPZ_KEYS if k not in npz.files]
            if missing:
                raise DataFileError(
                    f"{where}: missing array {missing[0]!r}; needs {', '.join(NPZ_KEYS)}"
                )
            arrays = {k: np.asarray(npz[k]) for k in NPZ_KEYS}
    except DataFileError:
        raise
    except Exception as exc:  # not a zip, a damaged member, an object array: all bad input
        raise DataFileError(f"{where}: not a readable .npz file ({exc})") from None
    return arrays, _check(arrays, where)


def _check(arrays: dict[str, np.ndarray], where: str) -> int:
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if y.ndim != 1:
            raise DataFileError(f"{where}: y_{split} must be 1-D labels, got shape {y.shape}")
        if len(x) != len(y):
            raise DataFileError(f"{where}: x_{split} has {len(x)} rows but y_{split} {len(y)}")
        if len(y) == 0:
            raise DataFileError(f"{where}: x_{split} is empty")
        if x.dtype == bool or not np.issubdtype(x.dtype, np.number) or x.ndim not in (2, 3, 4):
            raise DataFileError(
                f"{where}: x_{split} must be numeric (N, D), (N, H, W) or (N, C, H, W); "
                f"got {x.dtype} {x.shape}"
            )
        if not np.isfinite(x).all():
            raise DataFileError(f"{where}: x_{split} holds non-finite values (nan or inf)")
        integral = np.issubdtype(y.dtype, np.integer) or (
            np.issubdtype(y.dtype, np.floating)
            and np.isfinite(y).all()
            and (y == np.round(y)).all()
        )
        if y.dtype == bool or not integral:
            raise DataFileError(f"{where}: y_{split} must hold integer class labels")
    if arrays["x_train"].shape[1:] != arrays["x_test"].shape[1:]:
        raise DataFileError(
            f"{where}: x_train examples have shape {arrays['x_train'].shape[1:]} "
            f"but x_test's {arrays['x_test'].shape[1:]}"
        )
    labels = np.concatenate([arrays["y_train"], arrays["y_test"]]).astype(np.int64)
    num_classes = int(labels.max()) + 1
    if labels.min() < 0:
        raise DataFileError(f"{where}: labels must be 0 … C−1; found {labels.min()}")
    if len(np.unique(arrays["y_train"])) < 2:
        raise DataFileError(f"{where}: y_train holds a single class; a classifier needs two")
    return num_classes
