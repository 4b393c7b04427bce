"""Datasets and their splits: Fashion-MNIST (IDX files), ImageFolder directories, any torch Dataset.

Every loader returns a :class:`DataSplits`: a ``train`` split to fit on, a ``val`` split carved
deterministically from the training set for model selection, and the ``test`` split, which is
only for final reports (selecting models on it would make the reported accuracy optimistic).
Each split yields ``(image, label)`` with ``image`` a normalized ``float32`` tensor ``(C, H, W)``
and ``label`` an ``int``.

Fashion-MNIST is read straight from the original gzip IDX files with numpy (the Debian package
``dataset-fashion-mnist`` installs them under ``/usr/share/datasets/fashion-mnist``), held in
memory as ``uint8`` and normalized per batch, so a training step never waits on a DataLoader.

Example:
    >>> from hwtune.data import load_dataset, calibration_batch
    >>> splits = load_dataset("fashion-mnist")          # doctest: +SKIP
    >>> len(splits.train), len(splits.val), len(splits.test)  # doctest: +SKIP
    (50000, 10000, 10000)
    >>> calibration_batch(splits, 256, seed=0).shape     # doctest: +SKIP
    (256, 1, 28, 28)
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from hwtune._idx import read_idx
from hwtune.datasplits import DataSplits, TensorData, iter_batches, pixel_stats, split_indices, subset
from hwtune.errors import DataError, UnknownNameError, did_you_mean
from hwtune.image_data import (
    CIFAR10_ENV_VAR,
    CIFAR10_NAMES,
    cache_dir,
    cifar10_dir,
    is_cifar_batches,
    is_image_folder,
    load_cifar_batches,
    load_image_folder,
)

__all__ = [
    "APT_PACKAGE",
    "CIFAR10_ENV_VAR",
    "DATA_ENV_VAR",
    "FASHION_MNIST_CLASSES",
    "SYSTEM_DATA_DIR",
    "DataSplits",
    "TensorData",
    "calibration_batch",
    "check_fits",
    "from_datasets",
    "is_dataset_name",
    "iter_batches",
    "list_datasets",
    "load_dataset",
    "read_idx",
]

APT_PACKAGE = "dataset-fashion-mnist"
DATA_ENV_VAR = "HWTUNE_DATA"
SYSTEM_DATA_DIR = Path("/usr/share/datasets")
DEFAULT_VAL_FRACTION = 1 / 6  # 10,000 of Fashion-MNIST's 60,000 training images, the size of its test set

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


@dataclass(frozen=True)
class _IdxSpec:
    """An IDX-format dataset: directory names to look in, file stems, classes, torchvision class."""

    name: str
    dir_names: tuple[str, ...]
    class_names: tuple[str, ...]
    torchvision_class: str
    apt_package: str | None


_IDX_DATASETS: dict[str, _IdxSpec] = {
    "fashion-mnist": _IdxSpec(
        "fashion-mnist", ("fashion-mnist", "FashionMNIST/raw"), FASHION_MNIST_CLASSES, "FashionMNIST", APT_PACKAGE
    ),
    "mnist": _IdxSpec("mnist", ("mnist", "MNIST/raw"), tuple(str(i) for i in range(10)), "MNIST", None),
}
_ALIASES = {"fashion_mnist": "fashion-mnist", "fashionmnist": "fashion-mnist", "fmnist": "fashion-mnist"}
_IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def list_datasets() -> list[str]:
    """Return the dataset names :func:`load_dataset` knows (paths to directories work too)."""
    return sorted([*_IDX_DATASETS, CIFAR10_NAMES[0]])


def is_dataset_name(text: str) -> bool:
    """Whether ``text`` is a dataset name (or alias) :func:`load_dataset` knows, as opposed to a path."""
    key = str(text).strip().lower()
    return _ALIASES.get(key, key) in _IDX_DATASETS or key in CIFAR10_NAMES


def _check_fraction(val_fraction: float) -> None:
    if not isinstance(val_fraction, (int, float)) or not 0 <= val_fraction < 1:
        raise DataError(f"val_fraction must be a number in [0, 1), got {val_fraction!r}")


def _check_limit(key: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise DataError(f"{key} must be a positive integer or None, got {value!r}")


def _head(ds: Any, limit: int | None) -> Any:
    """First ``limit`` samples of a split (splits are already shuffled, so this is a random sample)."""
    if ds is None or limit is None or limit >= len(ds):
        return ds
    if isinstance(ds, TensorData):
        return ds.subset(slice(0, limit))
    return Subset(ds, range(limit))


# --------------------------------------------------------------------------------------------
# IDX files
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _read_idx_cached(path: str, mtime_ns: int, size: int, ndim: int) -> Any:
    # Keyed on mtime and size so an edited file is re-read. A search loads the same dataset in
    # every trial; the cache turns ~1 s of gzip into nothing. Returns a torch tensor (a private
    # copy: np.frombuffer views are read-only and torch warns about those).
    del mtime_ns, size
    arr = read_idx(path, ndim=ndim, dtype="u1")
    return torch.from_numpy(arr.copy())


def _read_idx_tensor(path: Path, ndim: int) -> torch.Tensor:
    try:
        st = path.stat()
    except OSError as exc:
        raise DataError(f"{path}: cannot read IDX file ({exc.strerror or exc})") from exc
    return _read_idx_cached(str(path), st.st_mtime_ns, st.st_size, ndim)


def _find_idx_file(directory: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (directory / name).is_file():
            return directory / name
    return None


def _idx_dir_complete(directory: Path) -> bool:
    return all(_find_idx_file(directory, stem) is not None for stem in _IDX_FILES.values())


def _cache_dir() -> Path:
    """Where ``download=True`` puts data when neither ``root`` nor ``$HWTUNE_DATA`` is given."""
    return cache_dir()


def _candidate_dirs(spec: _IdxSpec, root: Path | None) -> list[Path]:
    """Directories to look in: ``root`` only if given, else ``$HWTUNE_DATA``, the system dir, the cache."""
    bases: list[Path] = []
    if root is not None:
        bases.append(root)
    else:
        env = os.environ.get(DATA_ENV_VAR)
        if env:
            bases.append(Path(env).expanduser())
        bases += [SYSTEM_DATA_DIR, _cache_dir()]
    dirs: list[Path] = []
    for base in bases:
        if base != SYSTEM_DATA_DIR:  # the system dir holds one folder per dataset, never the files
            dirs.append(base)
        dirs.extend(base / sub for sub in spec.dir_names)
    return dirs


def _download(spec: _IdxSpec, root: Path) -> Path:
    """Fetch the IDX files with torchvision's downloader into ``root/<Class>/raw`` and return that dir."""
    try:
        import torchvision.datasets as tvd

        cls = getattr(tvd, spec.torchvision_class)
        for train in (True, False):
            cls(root=str(root), train=train, download=True)
    except Exception as exc:  # network errors come as URLError, HTTPError, RuntimeError, ...
        raise DataError(f"downloading {spec.name} into {root} failed: {exc}{_missing_hint(spec)}") from exc
    return root / spec.torchvision_class / "raw"


def _missing_hint(spec: _IdxSpec) -> str:
    hints = []
    if spec.apt_package:
        hints.append(f"install it with 'apt-get install {spec.apt_package}'")
    hints.append(f"point {DATA_ENV_VAR} or root= at a directory holding the four IDX .gz files")
    hints.append("or pass download=True to fetch it with torchvision")
    return "; " + ", ".join(hints[:-1]) + ", " + hints[-1]


def _load_idx_dataset(
    spec: _IdxSpec,
    *,
    root: Path | None,
    directory: Path | None,
    val_fraction: float,
    seed: int,
    download: bool,
) -> DataSplits:
    if directory is None:
        searched = _candidate_dirs(spec, root)
        directory = next((d for d in searched if _idx_dir_complete(d)), None)
        if directory is None:
            if not download:
                where = ", ".join(str(d) for d in searched)
                raise DataError(f"{spec.name} not found (looked in {where}){_missing_hint(spec)}")
            env = os.environ.get(DATA_ENV_VAR)
            dl_root = root or (Path(env).expanduser() if env else _cache_dir())
            directory = _download(spec, dl_root)
    files = {key: _find_idx_file(directory, stem) for key, stem in _IDX_FILES.items()}
    missing = [f"{_IDX_FILES[k]}.gz" for k, p in files.items() if p is None]
    if missing:
        raise DataError(f"{directory}: missing {', '.join(missing)}{_missing_hint(spec)}")
    tensors: dict[str, torch.Tensor] = {}
    problems = []
    for key, path in files.items():
        assert path is not None  # checked just above
        try:
            tensors[key] = _read_idx_tensor(path, ndim=3 if key.endswith("images") else 1)
        except DataError as exc:  # read all four files first so every broken one is reported
            problems.append(str(exc))
    if problems:
        raise DataError("\n".join(problems))
    for part in ("train", "test"):
        images, labels = tensors[f"{part}_images"], tensors[f"{part}_labels"]
        if images.shape[0] != labels.shape[0]:
            problems.append(
                f"{files[part + '_images']}: {images.shape[0]} images but {files[part + '_labels']} has "
                f"{labels.shape[0]} labels; expected equal counts"
            )
        bad = int((labels >= len(spec.class_names)).sum()) if spec.class_names else 0
        if bad:
            problems.append(f"{files[part + '_labels']}: {bad} labels outside 0..{len(spec.class_names) - 1}")
    if tensors["train_images"].shape[1:] != tensors["test_images"].shape[1:]:
        problems.append(
            f"{directory}: train images are {tuple(tensors['train_images'].shape[1:])} but test images are "
            f"{tuple(tensors['test_images'].shape[1:])}; expected the same size"
        )
    if not len(tensors["train_labels"]) or 0 in tensors["train_images"].shape[1:]:
        problems.append(f"{files['train_images']}: no training images (or 0-pixel images); expected some")
    if problems:
        raise DataError("\n".join(problems))

    class_names = spec.class_names or tuple(str(i) for i in range(int(tensors["train_labels"].max()) + 1))
    train_all = tensors["train_images"].unsqueeze(1)  # (N, 1, H, W)
    test_images = tensors["test_images"].unsqueeze(1)
    train_idx, val_idx = split_indices(train_all.shape[0], val_fraction, seed)
    train_images = train_all[torch.from_numpy(train_idx)]
    # Normalization statistics come from the training split only (no validation/test leakage).
    mean, std = pixel_stats(train_images)
    full = TensorData(train_all, tensors["train_labels"], mean=mean, std=std)
    train = TensorData(train_images, tensors["train_labels"][torch.from_numpy(train_idx)], mean=mean, std=std)
    val = full.subset(val_idx) if len(val_idx) else None
    test = TensorData(test_images, tensors["test_labels"], mean=mean, std=std)
    return DataSplits(
        name=spec.name,
        train=train,
        val=val,
        test=test,
        input_shape=train.input_shape,
        num_classes=len(class_names),
        class_names=class_names,
        mean=mean,
        std=std,
        source=str(directory),
        split_seed=seed,
    )


# --------------------------------------------------------------------------------------------
# Public loaders
# --------------------------------------------------------------------------------------------


def load_dataset(
    name_or_path: str | Path = "fashion-mnist",
    *,
    root: str | Path | None = None,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    seed: int = 0,
    train_limit: int | None = None,
    val_limit: int | None = None,
    test_limit: int | None = None,
    download: bool = False,
    image_size: int | tuple[int, int] | None = None,
    max_memory_bytes: int = 1 << 30,
) -> DataSplits:
    """Load a dataset by name or directory and split it into train / validation / test.

    ``name_or_path`` is a known name (``"fashion-mnist"``, ``"mnist"``, ``"cifar10"``), a directory
    holding the four IDX files (``train-images-idx3-ubyte.gz`` ...), CIFAR-10's python batches
    (``cifar-10-batches-py``: :mod:`hwtune.image_data`), or an ImageFolder directory with a ``train/``
    subfolder (one subfolder per class) and optional ``val/`` and ``test/``: decoded into memory when
    it fits ``max_memory_bytes``, else streamed through DataLoader workers (the choice is printed).
    ``"cifar10"`` (``"cifar-10"``) is the directory ``$HWTUNE_CIFAR10`` names, in either layout.

    For a name, the IDX files are looked up in ``root`` if given, otherwise in ``$HWTUNE_DATA``
    and then ``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``),
    each directly or in a ``fashion-mnist/`` or torchvision-style ``FashionMNIST/raw/`` subfolder.

    Args:
        name_or_path: Dataset name or directory.
        root: Directory to look in (and to download into) instead of the defaults.
        val_fraction: Share of the training set held out for validation (default 1/6, i.e.
            10,000 of Fashion-MNIST's 60,000); 0 gives ``val=None``. Ignored when an ImageFolder
            has its own ``val/``.
        seed: Seed of the train/validation permutation; the same seed gives the same split.
        train_limit: Keep only the first ``n`` (already shuffled) training samples.
        val_limit: Same for the validation split.
        test_limit: Same for the test split.
        download: Allow torchvision to download the files when they are missing. Off by default:
            nothing touches the network unless asked to.
        image_size: ImageFolder only: resize every image to this size (int or ``(H, W)``).
        max_memory_bytes: ImageFolder only: decode all images into memory when they fit, else stream them.

    Returns:
        The splits, with the normalization statistics of the training split.

    Raises:
        DataError: Files missing (the message names the apt package and ``HWTUNE_DATA``),
            unreadable, or of the wrong shape.
        UnknownNameError: ``name_or_path`` is neither a known dataset nor an existing directory.

    Example:
        >>> splits = load_dataset("fashion-mnist", train_limit=1000)  # doctest: +SKIP
        >>> splits.input_shape, splits.num_classes  # doctest: +SKIP
        ((1, 28, 28), 10)
    """
    _check_fraction(val_fraction)
    for key, value in (("train_limit", train_limit), ("val_limit", val_limit), ("test_limit", test_limit)):
        _check_limit(key, value)
    root_path = None if root is None else Path(root).expanduser()
    key = str(name_or_path).strip().lower()
    key = _ALIASES.get(key, key)
    if key in _IDX_DATASETS and not Path(str(name_or_path)).is_dir():
        splits = _load_idx_dataset(
            _IDX_DATASETS[key],
            root=root_path,
            directory=None,
            val_fraction=val_fraction,
            seed=seed,
            download=download,
        )
    elif key in CIFAR10_NAMES and not Path(str(name_or_path)).is_dir():
        splits = _load_directory(cifar10_dir(), image_size, val_fraction, seed, max_memory_bytes, name="cifar10")
    else:
        path = Path(name_or_path).expanduser()
        if not path.is_dir():
            raise UnknownNameError(
                f"unknown dataset {str(name_or_path)!r}: not a known name ({', '.join(list_datasets())}) "
                f"nor an existing directory{did_you_mean(key, [*_IDX_DATASETS, *_ALIASES, *CIFAR10_NAMES])}"
            )
        splits = _load_directory(path, image_size, val_fraction, seed, max_memory_bytes)
    if train_limit or val_limit or test_limit:
        splits = _replace_splits(
            splits,
            train=_head(splits.train, train_limit),
            val=_head(splits.val, val_limit),
            test=_head(splits.test, test_limit),
        )
    return splits


def _load_directory(
    path: Path,
    image_size: int | tuple[int, int] | None,
    val_fraction: float,
    seed: int,
    max_memory_bytes: int,
    name: str | None = None,
) -> DataSplits:
    """A directory of IDX files, CIFAR python batches or an ImageFolder tree."""
    if _idx_dir_complete(path):
        # A bare IDX directory: Fashion-MNIST's class names when the path says so, else "0".."n-1".
        names = FASHION_MNIST_CLASSES if "fashion" in str(path.resolve()).lower() else ()
        spec = _IdxSpec(path.name, (), names, "", None)
        return _load_idx_dataset(spec, root=None, directory=path, val_fraction=val_fraction, seed=seed, download=False)
    if is_cifar_batches(path):
        return load_cifar_batches(path, val_fraction=val_fraction, seed=seed, name=name)
    if is_image_folder(path):
        return load_image_folder(
            path,
            image_size=image_size,
            val_fraction=val_fraction,
            seed=seed,
            max_memory_bytes=max_memory_bytes,
            name=name,
        )
    present = sorted(p.name for p in path.iterdir())[:8]
    raise DataError(
        f"{path}: neither IDX files ({', '.join(s + '.gz' for s in _IDX_FILES.values())}), CIFAR python batches "
        f"(data_batch_1..5, test_batch) nor an ImageFolder layout (train/<class>/*.png); found {present}"
    )


def _replace_splits(splits: DataSplits, **changes: Any) -> DataSplits:
    return dataclasses.replace(splits, **changes)


def from_datasets(
    train: Dataset,
    test: Dataset | None = None,
    *,
    val: Dataset | None = None,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    seed: int = 0,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    name: str = "custom",
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    check_items: int = 8,
) -> DataSplits:
    """Wrap the user's own torch datasets as :class:`DataSplits`.

    Items must be ``(image, label)`` pairs: a floating-point tensor ``(C, H, W)`` (already
    normalized by the dataset's own transform) and an ``int`` (or 0-d integer tensor) label. A
    ``TensorDataset`` of ``uint8`` images is scaled to [0, 1] and normalized with ``mean``/``std``
    (computed from ``train`` if not given) and kept in memory for fast batching.

    Args:
        train: Training dataset; ``val`` is carved from it when not given.
        test: Optional held-out dataset for final reports.
        val: Optional validation dataset; otherwise ``val_fraction`` of ``train`` (seeded).
        val_fraction: Share of ``train`` held out when ``val`` is ``None``.
        seed: Seed of the train/validation permutation.
        num_classes: Number of classes; inferred from ``classes``/``targets``/label tensors if omitted.
        class_names: Names of the classes; defaults to the dataset's ``classes`` or ``"0".."n-1"``.
        name: Name recorded in reports.
        mean: Normalization the dataset applies (recorded for export manifests).
        std: Same.
        check_items: How many items of each split are read and checked up front.

    Raises:
        DataError: An item is not an ``(image tensor (C,H,W), int label)`` pair, shapes differ
            between items or splits, labels are out of range, or classes cannot be inferred.
    """
    _check_fraction(val_fraction)
    given = {"train": train, "val": val, "test": test}
    wrapped: dict[str, Any] = {}
    uint8_parts: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for role, ds in given.items():
        if ds is None:
            continue
        if isinstance(ds, torch.utils.data.TensorDataset) and len(ds.tensors) == 2:
            x, y = ds.tensors
            if x.ndim == 4 and y.ndim == 1 and not y.is_floating_point():
                if x.dtype == torch.uint8:
                    uint8_parts[role] = (x, y)  # wrapped below, once the statistics are known
                    continue
                if x.is_floating_point():
                    ds = TensorData(x, y)  # in memory already: batch it without a DataLoader
        wrapped[role] = ds
    if uint8_parts:
        if mean is None or std is None:
            if "train" not in uint8_parts:
                raise DataError("uint8 val/test tensors need mean= and std= when train is not a uint8 TensorDataset")
            mean, std = pixel_stats(uint8_parts["train"][0])
        for role, (x, y) in uint8_parts.items():
            wrapped[role] = TensorData(x, y, mean=mean, std=std)
    wrapped = {role: wrapped[role] for role in given if role in wrapped}  # keep train, val, test order

    problems: list[str] = []
    shapes: dict[str, tuple[int, ...]] = {}
    labels_seen: list[int] = []
    for role, ds in wrapped.items():
        shape = _check_items(ds, role, check_items, problems, labels_seen)
        if shape is not None:
            shapes[role] = shape
    if len(set(shapes.values())) > 1:
        problems.append(
            "splits have different image shapes: "
            + ", ".join(f"{r} {s}" for r, s in shapes.items())
            + "; expected one (C, H, W) for all"
        )
    if problems:
        raise DataError("\n".join(problems))

    if num_classes is None:
        num_classes = _infer_num_classes(given["train"], wrapped["train"], class_names)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise DataError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    bad = [lab for lab in labels_seen if not 0 <= lab < num_classes]
    if bad:
        raise DataError(f"labels {sorted(set(bad))[:5]} are outside 0..{num_classes - 1} (num_classes={num_classes})")
    if class_names is None:
        classes = getattr(given["train"], "classes", None)
        class_names = (
            tuple(map(str, classes))
            if classes is not None and len(classes) == num_classes
            else tuple(str(i) for i in range(num_classes))
        )
    if len(class_names) != num_classes:
        raise DataError(f"class_names has {len(class_names)} names, expected num_classes={num_classes}")

    train_ds = wrapped["train"]
    val_ds = wrapped.get("val")
    if val_ds is None and val_fraction > 0:
        train_idx, val_idx = split_indices(len(train_ds), val_fraction, seed)
        train_ds, val_ds = subset(train_ds, train_idx), subset(train_ds, val_idx)
    return DataSplits(
        name=name,
        train=train_ds,
        val=val_ds,
        test=wrapped.get("test"),
        input_shape=shapes["train"],  # type: ignore[arg-type]
        num_classes=num_classes,
        class_names=tuple(class_names),
        mean=None if mean is None else tuple(float(m) for m in mean),
        std=None if std is None else tuple(float(s) for s in std),
        source="user datasets",
        split_seed=seed,
    )


def _check_items(ds: Any, role: str, k: int, problems: list[str], labels_seen: list[int]) -> tuple[int, ...] | None:
    """Read a few items of ``ds`` and append one line per problem; return the image shape."""
    try:
        n = len(ds)
    except TypeError:
        problems.append(f"{role}: {type(ds).__name__} has no len(); expected a map-style torch Dataset")
        return None
    if n == 0:
        problems.append(f"{role}: dataset is empty")
        return None
    picks = sorted({0, n - 1, *np.random.default_rng(0).integers(0, n, size=max(k - 2, 0)).tolist()})
    shapes: dict[tuple[int, ...], int] = {}
    for i in picks:
        where = f"{role}[{i}]"
        try:
            item = ds[i]
        except Exception as exc:  # noqa: BLE001 - user code can raise anything; report it as a problem
            problems.append(f"{where}: reading the item failed: {type(exc).__name__}: {exc}")
            continue
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            got = type(item).__name__ + (f" of length {len(item)}" if isinstance(item, (tuple, list)) else "")
            problems.append(f"{where}: is a {got}; expected an (image tensor (C, H, W), int label) pair")
            continue
        x, y = item
        if not torch.is_tensor(x):
            problems.append(
                f"{where}: image is a {type(x).__name__}; expected a float torch.Tensor (C, H, W) "
                "(add torchvision.transforms.ToTensor() to the dataset)"
            )
        elif x.ndim != 3:
            problems.append(f"{where}: image has shape {tuple(x.shape)}; expected 3 dimensions (C, H, W)")
        elif not x.is_floating_point():
            problems.append(f"{where}: image dtype is {x.dtype}; expected a floating-point tensor")
        else:
            shapes[tuple(int(s) for s in x.shape)] = i
        label = _as_label(y)
        if label is None:
            problems.append(f"{where}: label is {type(y).__name__} {y!r:.40}; expected an int class index")
        else:
            labels_seen.append(label)
    if len(shapes) > 1:
        listed = ", ".join(f"{s} at {role}[{i}]" for s, i in shapes.items())
        problems.append(f"{role}: images have inconsistent shapes ({listed}); expected one (C, H, W)")
    return next(iter(shapes)) if len(shapes) == 1 else None


def _as_label(y: Any) -> int | None:
    if isinstance(y, bool):
        return None
    if isinstance(y, (int, np.integer)):
        return int(y)
    if torch.is_tensor(y) and y.numel() == 1 and not y.is_floating_point() and y.dtype != torch.bool:
        return int(y.item())
    return None


def _infer_num_classes(original: Any, wrapped: Any, class_names: Sequence[str] | None) -> int:
    if class_names is not None:
        return len(class_names)
    classes = getattr(original, "classes", None)
    if classes is not None:
        return len(classes)
    if isinstance(wrapped, TensorData):
        return int(wrapped.labels.max()) + 1
    targets = getattr(original, "targets", None)
    if targets is not None and len(targets):
        return int(max(int(t) for t in targets)) + 1
    raise DataError(
        f"cannot infer the number of classes of {type(original).__name__} (no .classes or .targets); "
        "pass num_classes= or class_names="
    )


def check_fits(splits: DataSplits, input_shape: Sequence[int], num_classes: int, *, model: str) -> None:
    """Raise one line when ``splits`` cannot feed a model of input ``(C, H, W)`` with ``num_classes`` outputs.

    Called before any training, so a mismatch is not discovered trial by trial.

    Args:
        splits: The data.
        input_shape: ``(C, H, W)`` the model takes (latency and memory are figured at this size).
        num_classes: Outputs of the model's classifier.
        model: What the model is, for the message (``"recipe 'fashion-convnet'"``).

    Raises:
        DataError: naming both: ``data 'imgs' (3x32x32, 3 classes) does not fit recipe ... (1x28x28, 10
            classes): channels 3 != 1, size 32x32 != 28x28, classes 3 != 10; ...``.
    """
    (c, h, w), (mc, mh, mw) = tuple(splits.input_shape), tuple(int(x) for x in input_shape)
    problems = [f"channels {c} != {mc}"] if c != mc else []
    problems += [f"size {h}x{w} != {mh}x{mw}"] if (h, w) != (mh, mw) else []
    problems += [f"classes {splits.num_classes} != {num_classes}"] if splits.num_classes != num_classes else []
    if problems:
        raise DataError(
            f"data {splits.name!r} ({c}x{h}x{w}, {splits.num_classes} classes) does not fit {model} "
            f"({mc}x{mh}x{mw}, {num_classes} classes): {', '.join(problems)}; use data of that shape "
            "(image folders: image_size= resizes) or a model made for this data"
        )


def calibration_batch(splits: DataSplits, n: int, seed: int = 0) -> np.ndarray:
    """Draw ``n`` normalized training images for int8 calibration, as ``float32 (N, C, H, W)``.

    Samples come from the train split (never validation/test, whose accuracy the quantized model
    is judged on), without replacement, chosen by ``seed``.

    Raises:
        DataError: ``n`` is not positive or exceeds the training split ("calibration set too small").
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise DataError(f"calibration sample count must be a positive integer, got {n!r}")
    size = len(splits.train)  # type: ignore[arg-type]  # map-style datasets have a len
    if n > size:
        raise DataError(
            f"calibration set too small: {n} calibration samples requested but the {splits.name} train split "
            f"has only {size}; lower calibration_samples or raise train_limit"
        )
    idx = np.sort(np.random.default_rng(seed).choice(size, size=n, replace=False))
    ds = splits.train
    if isinstance(ds, TensorData):
        images, _ = ds.batch(torch.from_numpy(idx))
    else:
        images = torch.stack([ds[int(i)][0] for i in idx])
    return np.ascontiguousarray(images.detach().cpu().numpy(), dtype=np.float32)
