"""hwtune.data: IDX parsing, Fashion-MNIST lookup, splits, ImageFolder, user datasets, calibration."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from hwtune import data as hd
from hwtune.errors import DataError, UnknownNameError


def write_idx(path: Path, array: np.ndarray, *, compress: bool = True) -> Path:
    """Write ``array`` (uint8) as an IDX file: magic 0x0000 0x08 ndim, big-endian dims, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    payload = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if compress:
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


def make_idx_dir(directory: Path, n_train: int = 120, n_test: int = 30, size: int = 6, classes: int = 10) -> Path:
    """Four IDX files whose images encode their own index (pixels 0 and 1) so splits can be traced."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for part, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, size, size), dtype=np.uint8)
        images[:, 0, 0] = np.arange(n) % 256
        images[:, 0, 1] = np.arange(n) // 256
        labels = (np.arange(n) % classes).astype(np.uint8)
        write_idx(directory / f"{part}-images-idx3-ubyte.gz", images)
        write_idx(directory / f"{part}-labels-idx1-ubyte.gz", labels)
    return directory


def sample_ids(ds: hd.TensorData) -> set[int]:
    """The index each synthetic image encodes in its first two raw pixels."""
    raw = ds.images[:, 0, 0, :2].to(torch.int64)
    return set((raw[:, 0] + 256 * raw[:, 1]).tolist())


@pytest.fixture
def isolated_env(monkeypatch, tmp_path):
    """No HWTUNE_DATA and a system data dir that does not exist: lookups see only what a test gives."""
    monkeypatch.delenv(hd.DATA_ENV_VAR, raising=False)
    monkeypatch.setattr(hd, "SYSTEM_DATA_DIR", tmp_path / "no-system-data")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    hd._read_idx_cached.cache_clear()
    return tmp_path


# --------------------------------------------------------------------------------------------- IDX


def test_read_idx_round_trips_gzip_and_plain(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    labels = np.array([7, 1], dtype=np.uint8)
    got = hd.read_idx(write_idx(tmp_path / "x-idx3-ubyte.gz", images), ndim=3, dtype="u1")
    np.testing.assert_array_equal(got, images)
    got = hd.read_idx(write_idx(tmp_path / "y-idx1-ubyte", labels, compress=False), ndim=1)
    np.testing.assert_array_equal(got, labels)


def test_read_idx_truncated_gzip_names_file(tmp_path):
    path = write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((50, 8, 8), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz.*(truncated|corrupt)"):
        hd.read_idx(path)


def test_read_idx_truncated_payload_reports_expected_size(tmp_path):
    header = bytes([0, 0, 8, 3]) + (10).to_bytes(4, "big") + (4).to_bytes(4, "big") + (4).to_bytes(4, "big")
    path = tmp_path / "short-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(header + bytes(100)))  # header says 160 bytes of pixels
    with pytest.raises(DataError) as info:
        hd.read_idx(path)
    msg = str(info.value)
    assert "short-idx3-ubyte.gz" in msg and "(10, 4, 4)" in msg and "truncated" in msg


def test_read_idx_wrong_magic_and_dims(tmp_path):
    bad = tmp_path / "bad.gz"
    bad.write_bytes(gzip.compress(b"\x1f\x8b\x08\x03" + bytes(64)))
    with pytest.raises(DataError, match=r"bad\.gz: bad IDX magic number 0x1f8b0803"):
        hd.read_idx(bad)
    labels = write_idx(tmp_path / "labels.gz", np.zeros(5, dtype=np.uint8))
    with pytest.raises(DataError, match=r"labels\.gz: IDX file has 1 dimensions, expected 3"):
        hd.read_idx(labels, ndim=3)
    with pytest.raises(DataError, match="not found"):
        hd.read_idx(tmp_path / "nope.gz")


def test_not_gzip_at_all(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(b"this is not gzip data at all")
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz"):
        hd.read_idx(path)


# -------------------------------------------------------------------------------------- lookup


def test_missing_dataset_names_apt_package_and_env(isolated_env):
    empty = isolated_env / "empty"
    empty.mkdir()
    with pytest.raises(DataError) as info:
        hd.load_dataset("fashion-mnist", root=empty)
    msg = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in msg
    assert "HWTUNE_DATA" in msg and "download=True" in msg and str(empty) in msg
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        hd.load_dataset("fashion-mnist")  # no root, no env, no system dir


def test_env_var_and_root_and_subdir_lookup(isolated_env, monkeypatch):
    make_idx_dir(isolated_env / "data" / "fashion-mnist")
    monkeypatch.setenv(hd.DATA_ENV_VAR, str(isolated_env / "data"))
    splits = hd.load_dataset("Fashion_MNIST")
    assert splits.source == str(isolated_env / "data" / "fashion-mnist")
    assert splits.class_names == hd.FASHION_MNIST_CLASSES
    monkeypatch.delenv(hd.DATA_ENV_VAR)
    splits = hd.load_dataset("fashion-mnist", root=isolated_env / "data" / "fashion-mnist")
    assert (len(splits.train), len(splits.val), len(splits.test)) == (100, 20, 30)


def test_download_fallback_only_when_allowed(isolated_env, monkeypatch):
    import torchvision.datasets

    calls = []

    class FakeFashionMNIST:  # stands in for torchvision's downloader: tests never touch the network
        def __init__(self, root, train, download):
            calls.append((root, train, download))
            make_idx_dir(Path(root) / "FashionMNIST" / "raw")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", FakeFashionMNIST)
    with pytest.raises(DataError, match="download=True"):
        hd.load_dataset("fashion-mnist")
    assert calls == []
    splits = hd.load_dataset("fashion-mnist", download=True)
    cache = isolated_env / "cache" / "hwtune" / "data"
    assert splits.source == str(cache / "FashionMNIST" / "raw") and len(calls) == 2
    hd.load_dataset("fashion-mnist")  # found in the cache now, no second download
    assert len(calls) == 2

    class Offline:
        def __init__(self, root, train, download):
            raise OSError("network is unreachable")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", Offline)
    with pytest.raises(DataError, match="network is unreachable.*apt-get install dataset-fashion-mnist"):
        hd.load_dataset("fashion-mnist", root=isolated_env / "elsewhere", download=True)


def test_unknown_name_suggests(isolated_env):
    with pytest.raises(UnknownNameError, match="did you mean 'fashion-mnist'"):
        hd.load_dataset("fashion-mnst")


def test_label_count_mismatch_is_reported(isolated_env):
    d = make_idx_dir(isolated_env / "fm")
    write_idx(d / "train-labels-idx1-ubyte.gz", np.zeros(119, dtype=np.uint8))
    with pytest.raises(DataError, match="120 images but .*train-labels-idx1-ubyte.gz has 119 labels"):
        hd.load_dataset(d)


def test_every_broken_file_is_reported(isolated_env):
    d = make_idx_dir(isolated_env / "fm")
    for name in ("train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        raw = (d / name).read_bytes()
        (d / name).write_bytes(raw[: len(raw) // 2])  # cut mid-stream
    with pytest.raises(DataError) as info:
        hd.load_dataset(d)
    lines = str(info.value).splitlines()
    assert len(lines) == 2
    assert "train-images-idx3-ubyte.gz" in lines[0] and "t10k-labels-idx1-ubyte.gz" in lines[1]


# -------------------------------------------------------------------------------------- splits


def test_split_is_deterministic_disjoint_and_complete(isolated_env):
    d = make_idx_dir(isolated_env / "fm", n_train=300)
    a = hd.load_dataset(d, seed=3)
    b = hd.load_dataset(d, seed=3)
    c = hd.load_dataset(d, seed=4)
    assert len(a.val) == 50 and len(a.train) == 250  # default val_fraction = 1/6
    assert torch.equal(a.val.images, b.val.images) and torch.equal(a.train.labels, b.train.labels)
    assert sample_ids(a.val) != sample_ids(c.val)
    assert sample_ids(a.train).isdisjoint(sample_ids(a.val))
    assert sample_ids(a.train) | sample_ids(a.val) == set(range(300))
    limited = hd.load_dataset(d, seed=3, train_limit=40, val_limit=10, test_limit=5)
    assert (len(limited.train), len(limited.val), len(limited.test)) == (40, 10, 5)
    assert torch.equal(limited.val.images, a.val.images[:10])
    assert hd.load_dataset(d, val_fraction=0).val is None


def test_normalization_statistics_come_from_train(isolated_env):
    splits = hd.load_dataset(make_idx_dir(isolated_env / "fm", n_train=240))
    x, y = splits.train.batch(torch.arange(len(splits.train)))
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert abs(float(x.mean())) < 1e-3 and abs(float(x.std()) - 1) < 1e-3
    raw = splits.train.images.double() / 255
    assert splits.mean[0] == pytest.approx(float(raw.mean()), abs=1e-4)
    item, label = splits.val[0]
    assert item.shape == (1, 6, 6) and isinstance(label, int)
    d = splits.to_dict()
    assert d["sizes"] == {"train": 200, "val": 40, "test": 30} and d["input_shape"] == [1, 6, 6]


def test_bad_arguments(isolated_env):
    d = make_idx_dir(isolated_env / "fm")
    with pytest.raises(DataError, match="val_fraction"):
        hd.load_dataset(d, val_fraction=1.0)
    with pytest.raises(DataError, match="train_limit"):
        hd.load_dataset(d, train_limit=0)


# ------------------------------------------------------------------------------------ real data


def test_real_fashion_mnist(fashion_dir, monkeypatch):
    monkeypatch.delenv(hd.DATA_ENV_VAR, raising=False)
    splits = hd.load_dataset("fashion-mnist")
    assert splits.source == str(fashion_dir)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (50_000, 10_000, 10_000)
    assert splits.input_shape == (1, 28, 28) and splits.num_classes == 10
    assert splits.class_names[9] == "Ankle boot"
    # The well-known statistics of the 60k training images are 0.2860 / 0.3530.
    assert splits.mean[0] == pytest.approx(0.286, abs=0.002) and splits.std[0] == pytest.approx(0.353, abs=0.002)
    counts = torch.bincount(splits.val.labels, minlength=10)
    assert int(counts.min()) > 900  # a random 10k split of a balanced set stays close to 1000 per class
    assert int(splits.test.labels.max()) == 9


# ---------------------------------------------------------------------------------- calibration


def test_calibration_batch(isolated_env):
    splits = hd.load_dataset(make_idx_dir(isolated_env / "fm"))
    a = hd.calibration_batch(splits, 16, seed=1)
    assert a.shape == (16, 1, 6, 6) and a.dtype == np.float32
    np.testing.assert_array_equal(a, hd.calibration_batch(splits, 16, seed=1))
    assert not np.array_equal(a, hd.calibration_batch(splits, 16, seed=2))
    # Drawn from train: every row equals some normalized training image.
    train_x = splits.train.tensors[0].numpy().reshape(len(splits.train), -1)
    assert all((np.abs(train_x - row.reshape(1, -1)).max(axis=1) == 0).any() for row in a)


def test_calibration_set_too_small(isolated_env):
    splits = hd.load_dataset(make_idx_dir(isolated_env / "fm"), train_limit=10)
    with pytest.raises(DataError, match="calibration set too small: 256 .* only 10"):
        hd.calibration_batch(splits, 256)
    with pytest.raises(DataError, match="positive integer"):
        hd.calibration_batch(splits, 0)


# -------------------------------------------------------------------------------- user datasets


class ListDataset(torch.utils.data.Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_from_datasets_wrong_items_lists_every_problem():
    bad = ListDataset(
        [
            (torch.zeros(1, 8, 8), 0),
            (np.zeros((1, 8, 8), dtype=np.float32), 1),  # numpy, not a tensor
            (torch.zeros(8, 8), 2),  # 2-D
            (torch.zeros(1, 8, 8), 0.5),  # float label
            torch.zeros(1, 8, 8),  # not a pair
            (torch.zeros(1, 9, 9), 3),  # inconsistent shape
        ]
    )
    with pytest.raises(DataError) as info:
        hd.from_datasets(bad, num_classes=10, check_items=50)
    msg = str(info.value)
    assert "train[1]: image is a ndarray; expected a float torch.Tensor (C, H, W)" in msg
    assert "train[2]: image has shape (8, 8); expected 3 dimensions" in msg
    assert "train[3]: label is float" in msg
    assert "train[4]: is a Tensor; expected an (image tensor (C, H, W), int label) pair" in msg
    assert "inconsistent shapes" in msg


def test_from_datasets_shape_mismatch_between_splits_and_label_range():
    train = ListDataset([(torch.zeros(1, 8, 8), i % 3) for i in range(12)])
    test = ListDataset([(torch.zeros(3, 8, 8), 0) for _ in range(4)])
    with pytest.raises(DataError, match="splits have different image shapes"):
        hd.from_datasets(train, test, num_classes=3)
    with pytest.raises(DataError, match=r"labels \[2\] are outside 0..1"):
        hd.from_datasets(train, num_classes=2)
    with pytest.raises(DataError, match="pass num_classes="):
        hd.from_datasets(train)


def test_from_datasets_generic_and_tensor_datasets():
    generic = ListDataset([(torch.randn(1, 8, 8), i % 4) for i in range(60)])
    splits = hd.from_datasets(generic, num_classes=4, name="toy", mean=(0.5,), std=(0.25,))
    assert (len(splits.train), len(splits.val)) == (50, 10) and splits.test is None
    assert splits.input_shape == (1, 8, 8) and splits.class_names == ("0", "1", "2", "3")
    assert splits.mean == (0.5,)

    x = torch.randint(0, 256, (60, 3, 5, 5), dtype=torch.uint8)
    y = torch.arange(60) % 5
    splits = hd.from_datasets(torch.utils.data.TensorDataset(x, y))
    assert isinstance(splits.train, hd.TensorData) and splits.num_classes == 5
    xb, _ = splits.train.batch(torch.arange(len(splits.train)))
    assert abs(float(xb.mean())) < 0.1 and len(splits.mean) == 3
    assert hd.calibration_batch(splits, 8).shape == (8, 3, 5, 5)


# --------------------------------------------------------------------------------- image folders


def _write_png(path: Path, size: tuple[int, int], value: int, mode: str = "L") -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color=value if mode == "L" else (value, 0, 255 - value)).save(path)


def test_image_folder(tmp_path):
    for split, n in (("train", 6), ("test", 2)):
        for cls, value in (("cat", 40), ("dog", 200)):
            for i in range(n):
                _write_png(tmp_path / "pets" / split / cls / f"{i}.png", (8, 8), value + i)
    splits = hd.load_dataset(tmp_path / "pets", val_fraction=1 / 6)
    assert splits.class_names == ("cat", "dog") and splits.input_shape == (1, 8, 8)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (10, 2, 4)
    x, y = splits.test.batch(torch.arange(4))
    assert y.tolist() == [0, 0, 1, 1] and float(x[0].mean()) < float(x[3].mean())
    resized = hd.load_dataset(tmp_path / "pets", image_size=4)
    assert resized.input_shape == (1, 4, 4)
    # Too big for memory: images are decoded on access with the same preprocessing.
    lazy = hd.load_dataset(tmp_path / "pets", max_memory_bytes=0)
    assert not isinstance(lazy.test, hd.TensorData)
    lazy_x, lazy_y = lazy.test[3]
    torch.testing.assert_close(lazy_x, x[3])
    assert lazy_y == 1


def test_image_folder_mixed_sizes_and_classes(tmp_path):
    _write_png(tmp_path / "d" / "train" / "a" / "0.png", (8, 8), 10, "RGB")
    _write_png(tmp_path / "d" / "train" / "b" / "0.png", (9, 7), 10, "RGB")
    with pytest.raises(DataError, match="different sizes .*image_size="):
        hd.load_dataset(tmp_path / "d")
    assert hd.load_dataset(tmp_path / "d", image_size=(6, 6), val_fraction=0).input_shape == (3, 6, 6)
    _write_png(tmp_path / "d" / "val" / "c" / "0.png", (8, 8), 10, "RGB")
    with pytest.raises(DataError, match="classes .* differ"):
        hd.load_dataset(tmp_path / "d", image_size=6)


def test_directory_without_known_layout(tmp_path):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "readme.txt").write_text("hi")
    with pytest.raises(DataError, match="neither IDX files .* nor an ImageFolder layout"):
        hd.load_dataset(tmp_path / "junk")
