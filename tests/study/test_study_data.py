"""mnist5k, npz and val_size through a real study on the shared Ray: every row says which data."""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest

from study.service import StudyOptions, run_study
from trainables.npz import file_sha256

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]


def _rows(storage, name: str) -> pd.DataFrame:
    return pd.read_parquet(storage / name / "results" / "metrics")


def test_an_npz_study_pins_its_file_and_records_validation_metrics(ray_session, storage, tmp_path):
    g = np.random.default_rng(0)
    path = tmp_path / "arrays.npz"
    np.savez(path, x_train=g.normal(size=(60, 5)), y_train=np.arange(60) % 3,
             x_test=g.normal(size=(20, 5)), y_test=np.arange(20) % 3)  # fmt: skip
    overrides = ["dataset=npz", f"data_path={path}", "val_size=12", "k=1"]
    options = StudyOptions(space="smoke", storage=str(storage), overrides=overrides, smoke=True)
    out = io.StringIO()
    outcome = run_study(options, out=out)
    assert outcome.exit_code == 0, out.getvalue()
    rows = _rows(storage, "smoke")
    assert set(rows["data_path"]) == {str(path)}
    assert set(rows["data_sha256"]) == {file_sha256(path)}
    assert (rows["val_size"] == 12).all()
    assert rows["val_acc"].between(0, 1).all() and rows["val_loss"].map(math.isfinite).all()


def test_a_mnist5k_study_runs_from_the_shipped_file(ray_session, storage):
    overrides = ["dataset=mnist5k", "n_train=256", "n_test=200", "k=1"]
    options = StudyOptions(space="smoke", name="m5k", storage=str(storage), overrides=overrides,
                           smoke=True)  # fmt: skip
    out = io.StringIO()
    outcome = run_study(options, out=out)
    assert outcome.exit_code == 0, out.getvalue()
    rows = _rows(storage, "m5k")
    assert set(rows["dataset"]) == {"mnist5k"} and rows["val_acc"].notna().all()
