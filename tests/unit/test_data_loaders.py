"""Dataset loaders: real MNIST-1D generation, bundled digits, CIFAR-10 and image folders."""

from __future__ import annotations

import os
import pickle
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from edgeloom.api.kinds.splittraining import DatasetName
from edgeloom.data import DATASETS, TensorPair, load_dataset
from edgeloom.data import mnist1d as mnist1d_module
from edgeloom.data.cifar import MEAN, STD
from edgeloom_testkit.fake_data import write_cifar10_folder, write_imagefolder


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGELOOM_CACHE", str(path))
        yield path


@pytest.fixture(scope="module")
def mnist1d(cache: Path) -> tuple[TensorPair, TensorPair]:
    return load_dataset("mnist1d", samples=2000, seed=0)


def _rows(pair: TensorPair) -> set[bytes]:
    return {row.numpy().tobytes() for row in pair.x}


def test_every_api_dataset_has_a_loader() -> None:
    assert {d.value for d in DatasetName} == set(DATASETS)


def test_mnist1d_shapes_and_balanced_test_set(mnist1d: tuple[TensorPair, TensorPair]) -> None:
    train, test = mnist1d
    assert train.x.shape == (1600, 1, 40) and test.x.shape == (400, 1, 40)
    assert train.x.dtype == torch.float32 and train.y.dtype == torch.int64
    assert torch.bincount(test.y).tolist() == [40] * 10
    assert torch.bincount(train.y).tolist() == [160] * 10
    assert not _rows(train) & _rows(test)


def test_mnist1d_is_cached_as_npz_and_reused(
    mnist1d: tuple[TensorPair, TensorPair], cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cached = cache / "mnist1d-n2000-seed42.npz"
    with np.load(cached, allow_pickle=False) as arrays:
        assert arrays["x"].shape == (2000, 40)

    def no_generation(samples: int) -> None:
        raise AssertionError("regenerated although cached")

    monkeypatch.setattr(mnist1d_module, "_generate", no_generation)
    train, test = load_dataset("mnist1d", samples=2000, seed=0)
    assert torch.equal(train.x, mnist1d[0].x) and torch.equal(test.y, mnist1d[1].y)


def test_mnist1d_seed_changes_the_split_not_the_data(
    mnist1d: tuple[TensorPair, TensorPair],
) -> None:
    train, test = load_dataset("mnist1d", samples=2000, seed=1)
    assert _rows(train) | _rows(test) == _rows(mnist1d[0]) | _rows(mnist1d[1])
    assert _rows(test) != _rows(mnist1d[1])


def test_mnist1d_generation_leaves_global_rngs_alone(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("EDGELOOM_CACHE", str(tmp_path))
    np.random.seed(123)
    random.seed(123)
    expected_np, expected_py = np.random.random(), random.random()
    np.random.seed(123)
    random.seed(123)
    load_dataset("mnist1d", samples=200)
    assert (np.random.random(), random.random()) == (expected_np, expected_py)


def test_corrupt_cache_file_is_regenerated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EDGELOOM_CACHE", str(tmp_path))
    (tmp_path / "mnist1d-n200-seed42.npz").write_bytes(b"not a zip file")
    train, test = load_dataset("mnist1d", samples=200)
    assert len(train) + len(test) == 200
    with np.load(tmp_path / "mnist1d-n200-seed42.npz", allow_pickle=False) as arrays:
        assert arrays["y"].shape == (200,)
    assert [p.name for p in tmp_path.iterdir()] == ["mnist1d-n200-seed42.npz"]


def test_unwritable_cache_only_disables_caching(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("EDGELOOM_CACHE", str(blocker / "sub"))
    train, test = load_dataset("mnist1d", samples=200)
    assert len(train) + len(test) == 200


def test_digits_scaled_and_balanced() -> None:
    train, test = load_dataset("digits", seed=0)
    assert train.x.shape == (1447, 1, 8, 8) and test.x.shape == (350, 1, 8, 8)
    assert float(train.x.min()) == 0.0 and float(train.x.max()) == 1.0
    assert torch.bincount(test.y).tolist() == [35] * 10
    other_train, _ = load_dataset("digits", seed=1)
    assert not torch.equal(train.y, other_train.y)


def test_digits_samples_subsets_before_splitting() -> None:
    train, test = load_dataset("digits", samples=500, seed=0)
    assert (len(train), len(test)) == (400, 100)
    assert torch.bincount(test.y).tolist() == [10] * 10


def test_cifar10_python_folder(tmp_path: Path) -> None:
    raw_test, raw_labels = write_cifar10_folder(tmp_path, per_batch=20)
    train, test = load_dataset("cifar10", path=str(tmp_path))
    assert train.x.shape == (100, 3, 32, 32) and test.x.shape == (20, 3, 32, 32)
    assert test.y.tolist() == raw_labels.tolist()
    pixel = raw_test[3].reshape(3, 32, 32)[1, 5, 7] / 255.0
    assert test.x[3, 1, 5, 7].item() == pytest.approx((pixel - MEAN[1]) / STD[1], abs=1e-5)
    again, _ = load_dataset("cifar10", path=str(tmp_path / "cifar-10-batches-py"))
    assert torch.equal(again.x, train.x)
    small_train, small_test = load_dataset("cifar10", path=str(tmp_path), samples=60, seed=0)
    assert (len(small_train), len(small_test)) == (50, 10)


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.mkdir, (str(self.marker),))


def test_cifar10_refuses_pickles_that_would_run_code(tmp_path: Path) -> None:
    write_cifar10_folder(tmp_path, per_batch=10)
    marker = tmp_path / "pwned"
    with (tmp_path / "cifar-10-batches-py" / "test_batch").open("wb") as handle:
        pickle.dump({b"data": _RunsCode(marker), b"labels": []}, handle, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="refusing global"):
        load_dataset("cifar10", path=str(tmp_path))
    assert not marker.exists()


def test_cifar10_missing_files_are_reported(tmp_path: Path) -> None:
    write_cifar10_folder(tmp_path, per_batch=10)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        load_dataset("cifar10", path=str(tmp_path))


def test_imagefolder_split_resize_and_labels(tmp_path: Path) -> None:
    pytest.importorskip("PIL", reason="the imagefolder loader needs Pillow")
    write_imagefolder(tmp_path, {"ant": 5, "bee": 5, "cat": 4})
    (tmp_path / "ant" / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden").mkdir()
    train, test = load_dataset("imagefolder", path=str(tmp_path), seed=0)
    assert train.x.shape == (11, 3, 32, 32) and test.x.shape == (3, 3, 32, 32)
    assert sorted(test.y.tolist()) == [0, 1, 2]
    assert float(train.x.min()) >= 0.0 and float(train.x.max()) <= 1.0
    brightness = [float(train.x[train.y == k].mean()) for k in range(3)]
    assert brightness == sorted(brightness) and brightness[0] < brightness[2] - 0.1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "mnist"}, "unknown dataset"),
        ({"name": "cifar10"}, "needs a path"),
        ({"name": "digits", "samples": 0}, "samples must be positive"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_dataset(**kwargs)  # type: ignore[arg-type]
