"""hwtune.image_data: streamed vs in-memory image folders, the decode cache, CIFAR-10 python batches, $HWTUNE_CIFAR10."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import hwtune.data as hd
import hwtune.image_data as im
from hwtune.datasplits import iter_batches
from hwtune.errors import DataError
from hwtune.training import TrainBudget, train


@pytest.fixture(autouse=True)
def _fresh_reports(monkeypatch, tmp_path):
    """Every test sees the one-per-process data lines again and has its own cache directory."""
    monkeypatch.setattr(im, "_reported", set())
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(im.CIFAR10_ENV_VAR, raising=False)


def _folder(root: Path, n: int = 6, size: int = 8) -> Path:
    """An RGB ImageFolder (train 2 x n, test 2 x 2) of random PNGs (lossless: decoded pixels are known)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", n), ("test", 2)):
        for cls in ("cat", "dog"):
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels, "RGB").save(root / split / cls / f"{i}.png")
    return root


def _tiny_net() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 2),
    )  # fmt: skip


def test_streamed_and_in_memory_folders_give_the_same_batches_and_training(tmp_path, capsys):
    root = _folder(tmp_path / "pets")
    mem = hd.load_dataset(root, val_fraction=1 / 6)
    err = capsys.readouterr().err
    assert "in memory, 0 MB uint8 (16 images decoded in" in err and "streamed," not in err
    streamed = hd.load_dataset(root, val_fraction=1 / 6, max_memory_bytes=0)
    err = capsys.readouterr().err
    assert "streamed, 0 MB uint8 do not fit max_memory_bytes=0" in err and "DataLoader worker" in err
    assert isinstance(streamed.test, im.StreamedImages) and streamed.test.num_workers >= 1
    assert (mem.mean, mem.std) == (streamed.mean, streamed.std)
    for part in ("train", "val", "test"):
        a, b = getattr(mem, part), getattr(streamed, part)
        order = list(torch.randperm(len(a), generator=torch.Generator().manual_seed(1)).split(3))
        for (xa, ya), (xb, yb) in zip(iter_batches(a, order), iter_batches(b, order), strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)  # the same bits, in workers or not
    nets = []
    for splits in (mem, streamed):
        torch.manual_seed(0)
        net = _tiny_net()
        train(net, splits, budget=TrainBudget(epochs=2), batch_size=4, seed=3)
        nets.append(net)
    for pa, pb in zip(nets[0].state_dict().values(), nets[1].state_dict().values(), strict=True):
        assert torch.equal(pa, pb)


def test_slow_decodes_are_cached_and_a_changed_folder_is_decoded_again(tmp_path, monkeypatch, capsys):
    root = _folder(tmp_path / "pets", n=6)
    monkeypatch.setattr(im, "CACHE_MIN_DECODE_S", 0.0)  # every decode counts as slow here
    first = hd.load_dataset(root, val_fraction=0)
    assert "images decoded in" in capsys.readouterr().err
    cached = list((tmp_path / "cache" / "hwtune" / "data" / "decoded").glob("*.pt"))
    assert len(cached) == 2  # train and test
    monkeypatch.setattr(im, "_reported", set())
    again = hd.load_dataset(root, val_fraction=0)
    assert "16 read from the decode cache" in capsys.readouterr().err
    assert torch.equal(first.train.images, again.train.images) and torch.equal(first.test.labels, again.test.labels)
    # An edited file changes the key: decoded again, and the folder's old entry is replaced.
    edited = root / "test" / "dog" / "0.png"
    os.utime(edited, ns=(edited.stat().st_atime_ns, edited.stat().st_mtime_ns + 10**9))
    monkeypatch.setattr(im, "_reported", set())
    hd.load_dataset(root, val_fraction=0)
    assert "images decoded in" in capsys.readouterr().err
    assert len(list(cached[0].parent.glob("*.pt"))) == 2


def _cifar_dir(root: Path, per_batch: int = 4, protocol: int = 2, classes: int = 10) -> Path:
    """A tiny ``cifar-10-batches-py``: 5 train batches and a test batch of ``per_batch`` images each."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in (*im.CIFAR_TRAIN_FILES, im.CIFAR_TEST_FILE):
        batch = {
            "batch_label": name,
            "labels": [int(v) for v in rng.integers(0, classes, size=per_batch)],
            "data": rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8),
            "filenames": [f"{name}_{i}.png" for i in range(per_batch)],
        }
        (root / name).write_bytes(pickle.dumps(batch, protocol=protocol))
    meta = {"label_names": [f"class{i}" for i in range(classes)], "num_cases_per_batch": per_batch}
    (root / im.CIFAR_META_FILE).write_bytes(pickle.dumps(meta, protocol=protocol))
    return root


@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar_python_batches_load_with_their_shapes_and_classes(tmp_path, protocol):
    root = _cifar_dir(tmp_path / "cifar-10-batches-py", protocol=protocol)
    splits = hd.load_dataset(root, val_fraction=0.25)
    assert splits.input_shape == (3, 32, 32) and splits.num_classes == 10
    assert splits.class_names == tuple(f"class{i}" for i in range(10))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (15, 5, 4)
    raw = pickle.loads((root / im.CIFAR_TEST_FILE).read_bytes())
    # Rows are R (1024), G (1024), B (1024) planes of 32x32: channel-first images.
    assert torch.equal(splits.test.images[2], torch.from_numpy(raw["data"][2].reshape(3, 32, 32)))
    assert splits.test.labels.tolist() == raw["labels"]
    x, _ = splits.train.batch(torch.arange(4))
    assert x.dtype == torch.float32 and x.shape == (4, 3, 32, 32)


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_malicious_or_malformed_cifar_batch_is_one_data_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = _cifar_dir(tmp_path / "batches")
    (root / "data_batch_3").write_bytes(pickle.dumps({"data": _Evil(), "labels": [0]}))
    with pytest.raises(DataError, match=r"data_batch_3: not a CIFAR python batch \(refused global (posix|os)\.system"):
        hd.load_dataset(root)
    assert not (tmp_path / "pwned").exists()
    (root / "data_batch_3").write_bytes(pickle.dumps({"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]}))
    with pytest.raises(DataError, match=r"data_batch_3: 'data' is uint8 array \(2, 100\); expected a uint8 array"):
        hd.load_dataset(root)
    (root / "data_batch_3").write_bytes(pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 10]}))
    with pytest.raises(DataError, match=r"data_batch_3: labels outside 0\.\.9") as info:
        hd.load_dataset(root)
    assert "\n" not in str(info.value)
    (root / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="data_batch_3: not a CIFAR python batch"):
        hd.load_dataset(root)


def test_cifar10_name_resolves_through_the_environment_variable(tmp_path, monkeypatch):
    assert hd.is_dataset_name("cifar10") and hd.is_dataset_name("CIFAR-10") and "cifar10" in hd.list_datasets()
    with pytest.raises(DataError, match=f"needs {im.CIFAR10_ENV_VAR} set") as info:
        hd.load_dataset("cifar10")
    assert "\n" not in str(info.value)
    monkeypatch.setenv(im.CIFAR10_ENV_VAR, str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match=f"{im.CIFAR10_ENV_VAR}=.*nowhere: does not exist"):
        hd.load_dataset("cifar-10")
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv(im.CIFAR10_ENV_VAR, str(tmp_path / "empty"))
    with pytest.raises(DataError, match="holds neither"):
        hd.load_dataset("cifar10")
    _cifar_dir(tmp_path / "dl" / "cifar-10-batches-py")
    monkeypatch.setenv(im.CIFAR10_ENV_VAR, str(tmp_path / "dl"))  # the folder torchvision downloads into
    splits = hd.load_dataset("cifar10", val_fraction=0)
    assert splits.name == "cifar10" and len(splits.train) == 20
    monkeypatch.setenv(im.CIFAR10_ENV_VAR, str(_folder(tmp_path / "imagefolder")))
    assert hd.load_dataset("cifar-10").input_shape == (3, 8, 8)
