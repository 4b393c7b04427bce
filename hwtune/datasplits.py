"""In-memory datasets, batches and splits: what every loader of :mod:`hwtune.data` returns.

:class:`TensorData` holds decoded images as ``uint8`` (or float) tensors and hands out whole
normalized batches; :func:`iter_batches` yields the batches of any split, slicing in-memory data and
streaming everything else through a ``DataLoader`` (workers, pinned memory for CUDA); a
:class:`DataSplits` is the train / validation / test triple with its shape, classes and normalization.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset

from hwtune.errors import DataError

__all__ = [
    "SCHEMA_VERSION",
    "DataSplits",
    "TensorData",
    "default_workers",
    "iter_batches",
    "loader_workers",
    "normalize_uint8",
    "pixel_stats",
    "split_indices",
    "subset",
]

SCHEMA_VERSION = 1


# --------------------------------------------------------------------------------------------
# In-memory dataset
# --------------------------------------------------------------------------------------------


class TensorData(Dataset):
    """An in-memory dataset of images and integer labels with fast batched access.

    Images are stored either as ``uint8`` (raw pixels; scaled to [0, 1] and normalized with
    ``mean``/``std`` on access, which keeps Fashion-MNIST at 47 MB instead of 188 MB) or as
    float tensors that are returned unchanged. ``batch(indices)`` returns a whole normalized batch
    in one tensor operation; training and evaluation use it instead of a DataLoader.

    Args:
        images: ``(N, C, H, W)`` tensor, ``uint8`` or floating point.
        labels: ``(N,)`` integer tensor.
        mean: Per-channel mean of the [0, 1]-scaled pixels (``uint8`` images only).
        std: Per-channel standard deviation, same convention.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        if images.ndim != 4:
            raise DataError(f"TensorData images must have shape (N, C, H, W), got {tuple(images.shape)}")
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise DataError(f"TensorData labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
        if images.dtype != torch.uint8 and not images.is_floating_point():
            raise DataError(f"TensorData images must be uint8 or floating point, got {images.dtype}")
        if images.is_floating_point() and (mean is not None or std is not None):
            raise DataError("TensorData mean/std apply to uint8 images only; float images are used as given")
        channels = images.shape[1]
        self.images = images
        self.labels = labels.to(torch.int64)
        self.mean = None if mean is None else tuple(float(m) for m in mean)
        self.std = None if std is None else tuple(float(s) for s in std)
        for key, value in (("mean", self.mean), ("std", self.std)):
            if value is not None and len(value) != channels:
                raise DataError(f"TensorData {key} needs {channels} values (one per channel), got {len(value)}")
        if self.std is not None and any(s <= 0 for s in self.std):
            raise DataError(f"TensorData std must be > 0, got {self.std}")
        self._mean_t = None if self.mean is None else torch.tensor(self.mean).view(1, -1, 1, 1)
        self._std_t = None if self.std is None else torch.tensor(self.std).view(1, -1, 1, 1)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self._convert(self.images[index].unsqueeze(0))[0], int(self.labels[index])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    @property
    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images, labels)`` like ``TensorDataset.tensors``; materializes the normalized float images."""
        return self._convert(self.images), self.labels

    def batch(self, indices: torch.Tensor | slice) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the normalized ``float32`` images and ``int64`` labels at ``indices``."""
        return self._convert(self.images[indices]), self.labels[indices]

    def subset(self, indices: torch.Tensor | np.ndarray | slice) -> TensorData:
        """Return a ``TensorData`` of the samples at ``indices`` (a view for a slice, else a copy)."""
        if isinstance(indices, np.ndarray):
            indices = torch.from_numpy(indices.astype(np.int64))
        images, labels = self.images[indices], self.labels[indices]
        return TensorData(images.contiguous(), labels.contiguous(), mean=self.mean, std=self.std)

    def _convert(self, images: torch.Tensor) -> torch.Tensor:
        if images.is_floating_point():
            return images.to(torch.float32)
        return normalize_uint8(images, self._mean_t, self._std_t)

    def __repr__(self) -> str:
        return f"TensorData(n={len(self)}, shape={self.input_shape}, dtype={self.images.dtype})"


# --------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------


def normalize_uint8(
    images: torch.Tensor, mean: torch.Tensor | None = None, std: torch.Tensor | None = None
) -> torch.Tensor:
    """``uint8`` pixels (any leading dims, channels third from last) scaled to [0, 1], minus ``mean``, over ``std``.

    ``mean``/``std`` are ``(1, C, 1, 1)`` tensors (or ``None``). Every element is computed on its
    own, so a batch normalized at once and its images normalized one by one (a streamed dataset's
    workers) give the same bits.
    """
    x = images.to(torch.float32).mul_(1.0 / 255.0)
    if mean is not None and std is not None:
        shape = (-1, 1, 1) if x.ndim == 3 else (1, -1, 1, 1)
        x.sub_(mean.view(shape)).div_(std.view(shape))
    return x


def default_workers() -> int:
    """DataLoader workers for streamed data: one core short of those this process may use, 1 to 8.

    Decoding runs in the workers while the main process trains, which needs at least one core of
    its own; ``$HWTUNE_DATA_WORKERS`` overrides it (``0``: decode in the training process).
    """
    env = os.environ.get("HWTUNE_DATA_WORKERS", "").strip()
    if env:
        try:
            value = int(env)
        except ValueError:
            value = -1
        if value < 0:
            raise DataError(f"HWTUNE_DATA_WORKERS={env!r}: expected a whole number >= 0")
        return value
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(8, cores - 1))


def loader_workers(dataset: Any) -> int | None:
    """The DataLoader workers a streamed dataset asks for (its ``num_workers``), looking through ``Subset``
    (and a ``ConcatDataset``'s first part)."""
    while isinstance(dataset, (Subset, ConcatDataset)):
        dataset = dataset.dataset if isinstance(dataset, Subset) else dataset.datasets[0]
    value = getattr(dataset, "num_workers", None)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def iter_batches(
    dataset: Any,
    batches: Sequence[torch.Tensor],
    *,
    num_workers: int | None = None,
    pin_memory: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(images, labels)`` for each index tensor in ``batches``, in that order.

    In-memory datasets (:class:`TensorData`, a float/int ``TensorDataset``) are sliced a whole batch at
    a time; any other map-style dataset goes through a ``DataLoader`` with exactly these batches,
    ``num_workers`` worker processes (default: what the dataset asks for, e.g. a streamed image
    folder, else 0) and pinned memory when ``pin_memory`` (training on CUDA: the copy to the GPU is
    then asynchronous).

    Example:
        >>> ds = TensorData(torch.zeros(5, 1, 2, 2, dtype=torch.uint8), torch.arange(5))
        >>> [tuple(y.tolist()) for _, y in iter_batches(ds, list(torch.arange(5).split(2)))]
        [(0, 1), (2, 3), (4,)]
    """
    if isinstance(dataset, TensorData):
        yield from (dataset.batch(idx) for idx in batches)
        return
    if isinstance(dataset, torch.utils.data.TensorDataset) and len(dataset.tensors) == 2:
        x_all, y_all = dataset.tensors
        if x_all.is_floating_point() and not y_all.is_floating_point():
            yield from ((x_all[idx], y_all[idx].long()) for idx in batches)
            return
    if num_workers is None:
        num_workers = loader_workers(dataset) or 0
    workers = min(num_workers, len(batches))
    yield from DataLoader(
        dataset,
        batch_sampler=[b.tolist() for b in batches],
        num_workers=workers,
        pin_memory=pin_memory and torch.cuda.is_available(),
        prefetch_factor=4 if workers else None,
    )


# --------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataSplits:
    """A dataset cut into train / validation / test splits, plus what a deployed model must know.

    Attributes:
        name: Dataset name (``"fashion-mnist"``, a directory name, or the user's name).
        train: Split to fit on.
        val: Split for model selection, carved from the training set; ``None`` if ``val_fraction=0``.
        test: Held-out split for final reports only; ``None`` when the source has none.
        input_shape: ``(C, H, W)`` of one image.
        num_classes: Number of classes; labels are ``0 .. num_classes-1``.
        class_names: Name of each class.
        mean: Per-channel mean subtracted from the [0, 1]-scaled pixels; ``None`` when the user's
            dataset normalizes on its own.
        std: Per-channel standard deviation the pixels are divided by; ``None`` likewise.
        source: Where the data came from (a directory, or ``"user datasets"``).
        split_seed: Seed of the train/validation permutation.
    """

    name: str
    train: Dataset
    val: Dataset | None
    test: Dataset | None
    input_shape: tuple[int, int, int]
    num_classes: int
    class_names: tuple[str, ...]
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    source: str = ""
    split_seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Metadata for manifests and reports (not the data): shapes, sizes, classes, normalization."""

        def size(ds: Any) -> int | None:
            return None if ds is None else len(ds)

        return {
            "schema_version": SCHEMA_VERSION,
            "name": self.name,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "mean": None if self.mean is None else list(self.mean),
            "std": None if self.std is None else list(self.std),
            "sizes": {"train": size(self.train), "val": size(self.val), "test": size(self.test)},
            "source": self.source,
            "split_seed": self.split_seed,
        }

    def val_in_train(self) -> DataSplits:
        """These splits with the validation images added to the training split; validation is unchanged.

        What a final model trains on once the search has used the validation split to choose it (the
        published figures of a dataset train on all of its training set); the validation accuracy of a
        model trained so is no longer held out, and the test split is the held-out figure.

        Raises:
            DataError: there is no validation split.
        """
        train, val = self.train, self.val
        if val is None or len(val) == 0:  # type: ignore[arg-type]  # a Dataset here always has a length
            raise DataError(f"dataset {self.name!r} has no validation split to train on")
        if (
            isinstance(train, TensorData)
            and isinstance(val, TensorData)
            and train.images.dtype == val.images.dtype
            and (train.mean, train.std) == (val.mean, val.std)
        ):
            merged: Dataset = TensorData(
                torch.cat([train.images, val.images]),
                torch.cat([train.labels, val.labels]),
                mean=train.mean,
                std=train.std,
            )
        else:
            merged = ConcatDataset([train, val])
        return dataclasses.replace(self, train=merged)


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded permutation of ``range(n)`` cut into (train, val) index arrays."""
    perm = np.random.default_rng(seed).permutation(n)
    n_val = round(n * val_fraction)
    if val_fraction > 0 and (n_val < 1 or n_val >= n):
        raise DataError(
            f"val_fraction={val_fraction} of {n} training samples leaves an empty train or validation split"
        )
    return perm[n_val:], perm[:n_val]


def pixel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean/std of uint8 ``(N, C, H, W)`` pixels scaled to [0, 1].

    A 256-bin histogram (``torch.bincount`` on uint8: 0.07 s for Fashion-MNIST's 47M pixels) gives
    them exactly; float sums need a 190 MB float copy and numpy's bincount widens to int64 (1.8 s).
    """
    means, stds = [], []
    values = np.arange(256, dtype=np.float64) / 255.0
    for c in range(images.shape[1]):
        hist = torch.bincount(images[:, c].reshape(-1), minlength=256).numpy().astype(np.float64)
        total = hist.sum()
        mean = float((hist * values).sum() / total)
        var = float((hist * (values - mean) ** 2).sum() / total)
        means.append(round(mean, 4))
        # Floor at one grey level: a constant channel would otherwise divide by zero.
        stds.append(round(max(var**0.5, 1 / 255), 4))
    return tuple(means), tuple(stds)


def subset(ds: Any, indices: np.ndarray) -> Any:
    if isinstance(ds, TensorData):
        return ds.subset(indices)
    return Subset(ds, indices.tolist())
