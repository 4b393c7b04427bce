"""Image datasets read from directories: ImageFolder trees and CIFAR-10's python batches.

An ImageFolder tree (``train/<class>/*.png`` plus optional ``val/`` and ``test/``) is decoded into
``uint8`` tensors held in memory when they fit ``max_memory_bytes``; otherwise it is *streamed*: each
batch is decoded by ``DataLoader`` worker processes (:func:`hwtune.datasplits.default_workers`: one
core short of this process's cores, 1..8) while the training process trains, with pinned memory and
non-blocking copies when training on CUDA. Decoding is per image in both cases and normalization is
element by element, so streamed and in-memory batches are the same bits.

Decoding CIFAR-10's 60,000 JPEGs took about 20 s on the 2-core development host (loaded), once per
run and per worker process of a search; reading back the decoded tensors takes well under a second.
So a decode that takes longer than :data:`CACHE_MIN_DECODE_S` is cached under the user's cache
directory (``$XDG_CACHE_HOME/hwtune/data/decoded``), keyed by the folder's file list, sizes and
modification times (an edited folder is decoded again; its older entry is replaced), written
atomically. What was chosen is reported once per process, on stderr.

CIFAR-10 as distributed for torchvision (``cifar-10-batches-py``: pickled ``data_batch_1`` ..
``data_batch_5``, ``test_batch``, ``batches.meta``) is read with a restricted unpickler that builds
numpy arrays and nothing else: a pickle is a program, and a downloaded one is untrusted input. The
name ``cifar10`` (``cifar-10``) is the directory ``$HWTUNE_CIFAR10`` names, in either layout (nothing
is downloaded at run time).
"""

from __future__ import annotations

import codecs
import hashlib
import io
import os
import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from hwtune._io import atomic_output
from hwtune.datasplits import (
    DataSplits,
    TensorData,
    default_workers,
    normalize_uint8,
    pixel_stats,
    split_indices,
    subset,
)
from hwtune.errors import DataError

__all__ = [
    "CACHE_MIN_DECODE_S",
    "CIFAR10_CLASSES",
    "CIFAR10_ENV_VAR",
    "CIFAR10_NAMES",
    "StreamedImages",
    "cache_dir",
    "cifar10_dir",
    "is_cifar_batches",
    "is_image_folder",
    "load_cifar_batches",
    "load_image_folder",
]

CIFAR10_ENV_VAR = "HWTUNE_CIFAR10"
CIFAR10_NAMES = ("cifar10", "cifar-10", "cifar_10")
CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
CIFAR_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST_FILE = "test_batch"
CIFAR_META_FILE = "batches.meta"
CIFAR_SHAPE = (3, 32, 32)
# A CIFAR batch file is 31 MB; anything far larger is not one (and is not read into memory).
CIFAR_MAX_FILE_BYTES = 256 << 20
# Decodes slower than this are cached (reading the cache back costs a fraction of a second).
CACHE_MIN_DECODE_S = 3.0

_reported: set[tuple[str, str]] = set()


def cache_dir() -> Path:
    """The user's hwtune data cache: ``$XDG_CACHE_HOME/hwtune/data`` (default ``~/.cache/hwtune/data``)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hwtune" / "data"


def _report(path: Path, message: str) -> None:
    """One line on stderr per directory and message per process (a search loads its data in every trial)."""
    from hwtune.progress import write

    key = (str(path), message.split(" (")[0])
    if key not in _reported:
        _reported.add(key)
        write(f"data {path}: {message}")


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Decoder:
    """One image file to a ``uint8 (C, H, W)`` tensor: grey or RGB, resized when asked (picklable for workers)."""

    channels: int
    size: tuple[int, int] | None = None

    def __call__(self, file: str) -> torch.Tensor:
        from PIL import Image
        from torchvision.transforms.functional import pil_to_tensor

        try:
            with Image.open(file) as img:
                im = img.convert("L" if self.channels == 1 else "RGB")
                if self.size is not None:
                    im = im.resize((self.size[1], self.size[0]), Image.Resampling.BILINEAR)
                return pil_to_tensor(im)
        except Exception as exc:  # PIL raises many types for broken files
            raise DataError(f"{file}: cannot read image: {exc}") from exc


class StreamedImages(Dataset):
    """An image folder read one file at a time: each item is decoded and normalized when it is asked for.

    ``iter_batches`` runs it through a ``DataLoader`` with ``num_workers`` worker processes.

    Args:
        samples: ``(file, label)`` pairs.
        classes: Class names.
        decoder: File to ``uint8`` tensor.
        shape: ``(C, H, W)`` every image must have.
        mean: Per-channel mean of the [0, 1] pixels.
        std: Per-channel standard deviation.
        num_workers: DataLoader worker processes that decode.
    """

    def __init__(
        self,
        samples: list[tuple[str, int]],
        classes: list[str],
        decoder: _Decoder,
        shape: tuple[int, int, int],
        mean: tuple[float, ...],
        std: tuple[float, ...],
        num_workers: int,
    ) -> None:
        self.samples = samples
        self.classes = classes
        self.targets = [label for _, label in samples]
        self.decoder = decoder
        self.shape = shape
        self.mean, self.std = mean, std
        self.num_workers = num_workers
        self._mean_t = torch.tensor(mean).view(1, -1, 1, 1)
        self._std_t = torch.tensor(std).view(1, -1, 1, 1)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        file, label = self.samples[index]
        img = self.decoder(file)
        if tuple(img.shape) != self.shape:
            raise DataError(f"{file}: image is {tuple(img.shape)}, expected {self.shape}; pass image_size=")
        return normalize_uint8(img, self._mean_t, self._std_t), label

    def __repr__(self) -> str:
        return f"StreamedImages(n={len(self)}, shape={self.shape}, workers={self.num_workers})"


def _decode_all(ds: Any, decoder: _Decoder, shape: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.empty((len(ds.samples), *shape), dtype=torch.uint8)
    for i, (file, _) in enumerate(ds.samples):
        img = decoder(file)
        if tuple(img.shape) != shape:
            raise DataError(f"{file}: image is {tuple(img.shape)}, expected {shape}; pass image_size=")
        images[i] = img
    return images, torch.tensor(ds.targets, dtype=torch.int64)


def _cache_key(folder: Path, ds: Any, decoder: _Decoder) -> str:
    """Digest of what the decoded tensors depend on: the files (name, size, mtime), labels and decoding."""
    h = hashlib.sha256(f"v1 {decoder.channels} {decoder.size} {ds.classes}".encode())
    for file, label in ds.samples:
        st = os.stat(file)
        h.update(f"\0{os.path.relpath(file, folder)}\0{label}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()[:32]


@dataclass
class _DecodeLog:
    """What loading the splits of one folder did, for its one printed line."""

    decoded: int = 0
    seconds: float = 0.0
    read: int = 0
    cached: str = ""
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{self.decoded:,} images decoded in {self.seconds:.1f} s"] if self.decoded else []
        if self.read:
            parts.append(f"{self.read:,} read from the decode cache")
        if self.cached:
            parts.append(f"cached in {self.cached}")
        return "; ".join(parts + self.problems)


def _cached_decode(
    folder: Path, ds: Any, decoder: _Decoder, shape: tuple[int, int, int], log: _DecodeLog
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode ``ds`` into memory, or read the tensors a previous run decoded; cache slow decodes."""
    where = cache_dir() / "decoded"
    prefix = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:16]
    path = where / f"{prefix}-{_cache_key(folder, ds, decoder)}.pt"
    if path.is_file():
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            images, labels = blob["images"], blob["labels"]
            if images.dtype == torch.uint8 and tuple(images.shape) == (len(ds.samples), *shape):
                log.read += len(labels)
                return images, labels
        except Exception as exc:  # noqa: BLE001 - a damaged cache entry is decoded again and rewritten
            log.problems.append(f"cache entry unreadable ({type(exc).__name__}), decoded again")
    start = time.perf_counter()
    images, labels = _decode_all(ds, decoder, shape)
    seconds = time.perf_counter() - start
    log.decoded += len(labels)
    log.seconds += seconds
    if seconds >= CACHE_MIN_DECODE_S:
        try:
            for old in where.glob(f"{prefix}-*.pt"):  # the same folder before it changed
                old.unlink(missing_ok=True)
            with atomic_output(path, what="the decoded-image cache", error=DataError) as tmp:
                torch.save({"images": images, "labels": labels}, tmp)
            log.cached = str(where)
        except (DataError, OSError) as exc:  # a read-only home still trains
            log.problems.append(f"not cached: {str(exc).splitlines()[0]}")
    return images, labels


# --------------------------------------------------------------------------------------------
# ImageFolder directories
# --------------------------------------------------------------------------------------------


def is_image_folder(path: Path) -> bool:
    """Whether ``path`` has a ``train/`` subfolder (an ImageFolder tree)."""
    return (path / "train").is_dir()


def load_image_folder(
    path: Path,
    *,
    image_size: int | tuple[int, int] | None,
    val_fraction: float,
    seed: int,
    max_memory_bytes: int,
    stats_samples: int = 1000,
    name: str | None = None,
) -> DataSplits:
    """Load ``path/train`` (and optional ``path/val``, ``path/test``) class-per-subfolder directories.

    In memory (``uint8``, decoded once and cached when slow) when all splits fit ``max_memory_bytes``,
    else streamed through DataLoader workers; the choice is reported on stderr.
    """
    from torchvision.datasets import ImageFolder

    def open_folder(sub: str) -> Any:
        try:
            return ImageFolder(str(path / sub), loader=str)  # the loader is ours: only the file list is used
        except (OSError, RuntimeError) as exc:
            raise DataError(
                f"{path / sub}: not a usable image folder (one subfolder per class with images): {exc}"
            ) from exc

    raw = {sub: open_folder(sub) for sub in ("train", "val", "test") if (path / sub).is_dir()}
    train_raw = raw["train"]
    problems = [
        f"{path / sub}: classes {ds.classes} differ from {path / 'train'} classes {train_raw.classes}"
        for sub, ds in raw.items()
        if sub != "train" and ds.classes != train_raw.classes
    ]
    if problems:
        raise DataError("\n".join(problems))

    from PIL import Image

    first = train_raw.samples[0][0]
    try:
        with Image.open(first) as img:
            mode = img.mode
    except Exception as exc:  # PIL raises many types for broken files
        raise DataError(f"{first}: cannot read image: {exc}") from exc
    size: tuple[int, int] | None = None
    if image_size is not None:
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)  # type: ignore[assignment]
    decoder = _Decoder(1 if mode in ("1", "L", "I", "I;16", "F") else 3, size)

    # Sample images for the statistics and to check that sizes agree when no resize is asked for.
    n_train = len(train_raw)
    sample_idx = np.random.default_rng(seed).choice(n_train, size=min(stats_samples, n_train), replace=False)
    sample = [decoder(train_raw.samples[int(i)][0]) for i in sample_idx]
    shapes = {tuple(t.shape) for t in sample}
    if len(shapes) > 1:
        listed = ", ".join("x".join(map(str, s[1:])) for s in sorted(shapes)[:4])
        raise DataError(f"{path / 'train'}: images have different sizes ({listed}); pass image_size= to resize them")
    shape: tuple[int, int, int] = next(iter(shapes))  # type: ignore[assignment]
    mean, std = pixel_stats(torch.stack(sample))

    total = sum(len(ds) for ds in raw.values()) * int(np.prod(shape))
    in_memory = total <= max_memory_bytes
    workers = 0 if in_memory else default_workers()
    log = _DecodeLog()

    def materialize(sub: str) -> Any:
        ds = raw[sub]
        if in_memory:
            images, labels = _cached_decode(path / sub, ds, decoder, shape, log)
            return TensorData(images, labels, mean=mean, std=std)
        return StreamedImages(list(ds.samples), ds.classes, decoder, shape, mean, std, workers)

    train_full = materialize("train")
    if "val" in raw:
        train, val = train_full, materialize("val")
    else:
        train_idx, val_idx = split_indices(len(train_full), val_fraction, seed)
        train = subset(train_full, train_idx)
        val = subset(train_full, val_idx) if len(val_idx) else None
    test = materialize("test") if "test" in raw else None
    if in_memory:
        _report(path, f"in memory, {total / 1e6:.0f} MB uint8 ({log.summary()})")
    else:
        _report(
            path,
            f"streamed, {total / 1e6:.0f} MB uint8 do not fit max_memory_bytes={max_memory_bytes:,}: "
            f"decoded per batch by {workers} DataLoader worker(s)" + (" (pinned memory on CUDA)" if workers else ""),
        )
    return DataSplits(
        name=name or path.name,
        train=train,
        val=val,
        test=test,
        input_shape=shape,
        num_classes=len(train_raw.classes),
        class_names=tuple(train_raw.classes),
        mean=mean,
        std=std,
        source=str(path),
        split_seed=seed,
    )


# --------------------------------------------------------------------------------------------
# CIFAR-10 python batches
# --------------------------------------------------------------------------------------------


_MULTIARRAY = ("numpy.core.multiarray", "numpy._core.multiarray")


def _numpy_global(module: str, name: str) -> Any:
    """The few callables a pickled numpy array needs (numpy 1 and 2 module names); ``None`` for any other."""
    if module in _MULTIARRAY and name == "_reconstruct":
        return np.zeros(0).__reduce__()[0]  # numpy's own _reconstruct, wherever this numpy keeps it
    if module in ("numpy.core.numeric", "numpy._core.numeric") and name == "_frombuffer":  # protocol 5
        return np.zeros(1).__reduce_ex__(5)[0]
    if module == "numpy" and name in ("ndarray", "dtype"):
        return getattr(np, name)
    if (module, name) == ("_codecs", "encode"):  # protocol-2 pickles of bytes (Python 3 writers)
        return codecs.encode
    return None


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings, numbers and numpy arrays; any other global is refused."""

    def find_class(self, module: str, name: str) -> Any:
        found = _numpy_global(module, name)
        if found is None:
            raise pickle.UnpicklingError(f"refused global {module}.{name} (only numpy arrays are read)")
        return found


def _unpickle(path: Path) -> Any:
    try:
        size = path.stat().st_size
        if size > CIFAR_MAX_FILE_BYTES:
            raise DataError(f"{path}: {size:,} bytes; a CIFAR batch file is about 31 MB")
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read CIFAR batch file ({exc.strerror or exc})") from exc
    try:
        return _ArrayUnpickler(io.BytesIO(data), encoding="latin1").load()
    except Exception as exc:  # a broken or hostile pickle raises anything
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{path}: not a CIFAR python batch ({reason})") from exc


def _field(obj: Any, key: str) -> Any:
    if not isinstance(obj, dict):
        return None
    return obj.get(key, obj.get(key.encode()))


def _read_batch(path: Path, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    obj = _unpickle(path)
    data, labels = _field(obj, "data"), _field(obj, "labels")
    n_pixels = int(np.prod(CIFAR_SHAPE))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != n_pixels:
        got = f"{data.dtype} array {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{path}: 'data' is {got}; expected a uint8 array (N, {n_pixels})")
    try:
        labels_arr = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        labels_arr = np.zeros(0, dtype=np.int64)
    if labels_arr.ndim != 1 or labels_arr.shape[0] != data.shape[0]:
        raise DataError(f"{path}: 'labels' must be {data.shape[0]} integers (one per image), got {str(labels)[:60]}")
    if labels_arr.size and (labels_arr.min() < 0 or labels_arr.max() >= num_classes):
        raise DataError(f"{path}: labels outside 0..{num_classes - 1} (found {labels_arr.min()}..{labels_arr.max()})")
    images = torch.from_numpy(np.ascontiguousarray(data).reshape(-1, *CIFAR_SHAPE).copy())
    return images, torch.from_numpy(labels_arr)


def is_cifar_batches(path: Path) -> bool:
    """Whether ``path`` holds CIFAR-10's python batches (``data_batch_1`` and ``test_batch``)."""
    return (path / CIFAR_TRAIN_FILES[0]).is_file() and (path / CIFAR_TEST_FILE).is_file()


def load_cifar_batches(path: Path, *, val_fraction: float, seed: int, name: str | None = None) -> DataSplits:
    """CIFAR-10's ``cifar-10-batches-py`` directory as splits (train 50,000 minus validation, test 10,000).

    Raises:
        DataError: a batch file missing, not a pickle of numpy arrays (any other global is refused),
            or of the wrong shape/labels; one line naming the file.
    """
    missing = [f for f in (*CIFAR_TRAIN_FILES, CIFAR_TEST_FILE) if not (path / f).is_file()]
    if missing:
        raise DataError(
            f"{path}: missing {', '.join(missing)}; expected cifar-10-batches-py (data_batch_1..5, test_batch)"
        )
    classes = CIFAR10_CLASSES
    if (path / CIFAR_META_FILE).is_file():
        names = _field(_unpickle(path / CIFAR_META_FILE), "label_names")
        if not isinstance(names, list) or not names or not all(isinstance(n, (str, bytes)) for n in names):
            raise DataError(
                f"{path / CIFAR_META_FILE}: 'label_names' must be a list of class names, got {str(names)[:60]}"
            )
        classes = tuple(n.decode("latin1") if isinstance(n, bytes) else n for n in names)
    parts = [_read_batch(path / f, len(classes)) for f in CIFAR_TRAIN_FILES]
    train_all = torch.cat([p[0] for p in parts])
    train_labels = torch.cat([p[1] for p in parts])
    test_images, test_labels = _read_batch(path / CIFAR_TEST_FILE, len(classes))
    train_idx, val_idx = split_indices(len(train_labels), val_fraction, seed)
    mean, std = pixel_stats(train_all[torch.from_numpy(train_idx)])  # the training split only: no leakage
    full = TensorData(train_all, train_labels, mean=mean, std=std)
    _report(path, f"in memory, {(train_all.numel() + test_images.numel()) / 1e6:.0f} MB uint8 (CIFAR python batches)")
    return DataSplits(
        name=name or path.name,
        train=full.subset(train_idx),
        val=full.subset(val_idx) if len(val_idx) else None,
        test=TensorData(test_images, test_labels, mean=mean, std=std),
        input_shape=CIFAR_SHAPE,
        num_classes=len(classes),
        class_names=classes,
        mean=mean,
        std=std,
        source=str(path),
        split_seed=seed,
    )


def cifar10_dir() -> Path:
    """The CIFAR-10 directory ``$HWTUNE_CIFAR10`` names (an ImageFolder copy or ``cifar-10-batches-py``,
    also when it is the parent of ``cifar-10-batches-py``).

    Raises:
        DataError: the variable is unset, or names no directory in either layout (one line naming it).
    """
    value = os.environ.get(CIFAR10_ENV_VAR, "").strip()
    if not value:
        raise DataError(
            f"dataset 'cifar10' needs {CIFAR10_ENV_VAR} set to a CIFAR-10 directory (an ImageFolder copy with "
            "train/ and test/, or cifar-10-batches-py); nothing is downloaded at run time"
        )
    path = Path(value).expanduser()
    for cand in (path, path / "cifar-10-batches-py"):
        if cand.is_dir() and (is_cifar_batches(cand) or is_image_folder(cand)):
            return cand
    what = "does not exist" if not path.exists() else "holds neither train/<class>/ images nor cifar-10-batches-py"
    raise DataError(
        f"{CIFAR10_ENV_VAR}={value}: {what}; expected an ImageFolder copy of CIFAR-10 or cifar-10-batches-py"
    )
