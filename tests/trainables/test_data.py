"""Datasets: embedded digits, synthetic, torchvision loading from files in its on-disk format."""

from __future__ import annotations

import pickle
import struct

import numpy as np
import pytest
import torch

from trainables import DatasetMissingError, Trial, TrialConfig, batch_indices, load_data


def test_digits_is_embedded_split_fixed_and_standardised():
    data = load_data(TrialConfig.from_mapping({"val_size": 0}))
    assert data.x_train.shape == (1438, 1, 8, 8) and data.x_test.shape == (359, 1, 8, 8)
    assert data.num_classes == 10 and data.x_train.dtype == torch.float32
    assert abs(float(data.x_train.mean())) < 1e-5 and abs(float(data.x_train.std()) - 1) < 1e-3
    other_seed = load_data(TrialConfig.from_mapping({"seed": 5, "val_size": 0}))
    torch.testing.assert_close(other_seed.x_test, data.x_test)  # the split does not follow the seed


def test_subsets_are_deterministic_and_seeded():
    a = load_data(TrialConfig.from_mapping({"n_train": 100, "n_test": 50}))
    b = load_data(TrialConfig.from_mapping({"n_train": 100, "n_test": 50}))
    c = load_data(TrialConfig.from_mapping({"n_train": 100, "n_test": 50, "seed": 1}))
    assert a.x_train.shape[0] == 100 and a.x_test.shape[0] == 50
    torch.testing.assert_close(a.x_train, b.x_train)
    assert not torch.equal(a.y_train, c.y_train)


def test_synthetic_teacher_task_depends_on_seed():
    a = load_data(TrialConfig.from_mapping({"dataset": "synthetic", "val_size": 0}))
    b = load_data(TrialConfig.from_mapping({"dataset": "synthetic", "seed": 1, "val_size": 0}))
    assert a.x_train.shape == (1024, 16) and a.num_classes == 4 and a.image_shape is None
    assert len(torch.unique(a.y_train)) == 4
    assert not torch.equal(a.x_train, b.x_train)


@pytest.mark.parametrize(("n", "batch"), [(10, 3), (12, 4), (7, 7), (5, 0), (5, 9)])
def test_batch_indices_cover_every_example_once_per_epoch(n, batch):
    if batch in (0,) or batch >= n:
        assert torch.equal(batch_indices(0, n, batch, 3), torch.arange(n))
        return
    steps = n * 3  # any multiple of n examples: whole epochs
    seen = torch.cat([batch_indices(0, n, batch, t) for t in range(steps)])
    for epoch in range(batch * steps // n):
        chunk = seen[epoch * n : (epoch + 1) * n]
        assert sorted(chunk.tolist()) == list(range(n))
    assert not torch.equal(seen[:n], seen[n : 2 * n])  # reshuffled each epoch
    assert torch.equal(batch_indices(0, n, batch, 5), batch_indices(0, n, batch, 5))
    assert not torch.equal(batch_indices(0, n, batch, 5), batch_indices(1, n, batch, 5))


# ---- torchvision: tiny files in its on-disk format; never a download --------------------
def _write_idx(path, array: np.ndarray) -> None:
    """The IDX format torchvision reads (uncompressed, as its download leaves it)."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _write_mnist(root, folder: str, n_train: int = 30, n_test: int = 12) -> None:
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(
            raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        )
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", (np.arange(n) % 10).astype(np.uint8))


def _write_cifar10(root, n: int = 20) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        batch = {
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            "labels": list(np.arange(n) % 10),
        }
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)


@pytest.fixture
def no_integrity_check(monkeypatch):
    """torchvision checks CIFAR-10 files by MD5; our tiny stand-ins cannot match it."""
    import torchvision

    monkeypatch.setattr(torchvision.datasets.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)


@pytest.mark.parametrize(
    ("name", "folder"), [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")]
)
def test_mnist_family_loads_from_torchvision_files(tmp_path, name, folder):
    _write_mnist(tmp_path, folder)
    cfg = {"dataset": name, "data_dir": str(tmp_path), "val_size": 0}
    data = load_data(TrialConfig.from_mapping(cfg))
    assert data.x_train.shape == (30, 1, 28, 28) and data.x_test.shape == (12, 1, 28, 28)
    assert data.y_train.tolist() == [i % 10 for i in range(30)]
    recs = list(Trial({"dataset": name, "data_dir": str(tmp_path), "model": "cnn", "channels": 4,
                       "total_steps": 2, "batch_size": 8, "probe_size": 4}).records())  # fmt: skip
    assert recs[-1]["step"] == 2


def test_cifar10_loads_from_torchvision_files(tmp_path, no_integrity_check):
    _write_cifar10(tmp_path)
    cfg = {"dataset": "cifar10", "data_dir": str(tmp_path), "val_size": 0}
    data = load_data(TrialConfig.from_mapping(cfg))
    assert data.x_train.shape == (100, 3, 32, 32) and data.x_test.shape == (20, 3, 32, 32)
    assert data.image_shape == (3, 32, 32)
    per_channel = data.x_train.mean((0, 2, 3))
    assert per_channel.abs().max() < 1e-5


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10"])
def test_missing_torchvision_files_say_where_and_how(tmp_path, name):
    with pytest.raises(DatasetMissingError) as err:
        load_data(
            TrialConfig.from_mapping({"dataset": name, "data_dir": str(tmp_path / "nowhere")})
        )
    message = str(err.value)
    assert str(tmp_path / "nowhere") in message and "download=true" in message
    assert not (tmp_path / "nowhere").exists() or not any((tmp_path / "nowhere").rglob("*"))


def test_a_trial_on_given_tensors_equals_one_that_loads_them():
    cfg = TrialConfig.from_mapping(
        {"dataset": "synthetic", "total_steps": 20, "eval_every": 10, "probe_size": 8}
    )
    given = load_data(cfg).to(torch.device("cpu"), torch.float64)  # cast back by the trial
    ran = [list(Trial(cfg, data=d).records()) for d in (None, given)]
    for a, b in zip(*ran, strict=True):
        a.pop("elapsed_s"), b.pop("elapsed_s")
        assert a == pytest.approx(b, nan_ok=True)
    assert Trial(cfg, data=given).data.x_train.dtype == torch.float32


@pytest.mark.slow  # imports scikit-learn, and a subprocess that must not
def test_digits_are_sklearns_digits_read_without_importing_sklearn():
    import subprocess
    import sys

    from sklearn.datasets import load_digits

    from trainables.data import digits_arrays

    images, labels = digits_arrays()
    bunch = load_digits()
    assert np.array_equal(images, bunch.images) and np.array_equal(labels, bunch.target)
    code = "import sys; from trainables.data import digits_arrays; digits_arrays(); "
    code += "print('sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
