"""Settings shared by elastic parent training and distilled fine-tuning around the one loop.

Both run :func:`hwtune.engine.run_loop`; this module holds what they set it up with, in the
conventions of ``hwtune.training.train`` (SGD with Nesterov momentum 0.9, linear warm-up then
cosine decay, no weight decay on BatchNorm and biases).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import torch

from hwtune.data import DataSplits, TensorData, iter_batches
from hwtune.engine import lr_factor, num_threads, param_groups
from hwtune.errors import ConfigError, DataError

__all__ = [
    "Schedule",
    "batch_fetcher",
    "check_batch_size",
    "check_positive",
    "fetch_batches",
    "num_threads",
    "plan_batches",
    "sgd",
    "train_split",
]

WARMUP_FRACTION = 0.05
WEIGHT_DECAY = 5e-4


def check_positive(**values: Any) -> None:
    """``ConfigError`` listing every value that is not a finite number > 0 (``None`` is allowed)."""
    problems = [
        f"{k} must be a number > 0, got {v!r}"
        for k, v in values.items()
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0)
    ]
    if problems:
        raise ConfigError("\n".join(problems))


def check_batch_size(batch_size: Any) -> None:
    """``ConfigError`` unless an integer >= 2 (BatchNorm needs two images per batch)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 2:
        raise ConfigError(f"batch_size must be an integer >= 2, got {batch_size!r}")


def train_split(data: Any) -> Any:
    """The training split of a ``DataSplits``, or ``data`` itself (a Dataset)."""
    ds: Any = data.train if isinstance(data, DataSplits) else data
    if ds is None or len(ds) == 0:
        raise DataError("cannot train on an empty training split")
    return ds


def batch_fetcher(ds: Any) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """``indices -> (images, labels)`` reading whole batches at once where the dataset allows."""
    if isinstance(ds, TensorData):
        return ds.batch
    if isinstance(ds, torch.utils.data.TensorDataset) and len(ds.tensors) == 2:
        x_all, y_all = ds.tensors
        return lambda idx: (x_all[idx].float(), y_all[idx].long())

    def fetch(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        items = [ds[int(i)] for i in idx]
        return torch.stack([torch.as_tensor(x) for x, _ in items]), torch.tensor([int(y) for _, y in items])

    return fetch


def fetch_batches(
    ds: Any, batches: list[torch.Tensor], *, pin_memory: bool = False
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(images, labels)`` of each index batch, lazily (a run stopped early reads no more).

    In-memory data is sliced a batch at a time; any other dataset (a streamed image folder) is
    decoded by DataLoader workers (:func:`hwtune.data.iter_batches`), into pinned memory when asked.
    """
    if isinstance(ds, (TensorData, torch.utils.data.TensorDataset)):
        fetch = batch_fetcher(ds)
        return (fetch(idx) for idx in batches)
    return iter_batches(ds, batches, pin_memory=pin_memory)


def plan_batches(n: int, batch_size: int, samples: int, seed: int) -> list[torch.Tensor]:
    """Index batches: shuffled epochs back to back, cut at ``samples``; no batch of one (BatchNorm)."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.cat([torch.randperm(n, generator=gen) for _ in range(math.ceil(samples / n))])[:samples]
    batches = list(order.split(batch_size))
    if len(batches) > 1 and len(batches[-1]) < 2:
        last = batches.pop()
        batches[-1] = torch.cat([batches[-1], last])
    return batches


def sgd(model: torch.nn.Module, lr: float, weight_decay: float = WEIGHT_DECAY) -> torch.optim.Optimizer:
    """SGD, Nesterov momentum 0.9, the trainer's parameter groups (no decay on BN and biases)."""
    return torch.optim.SGD(param_groups(model, weight_decay), lr=lr, momentum=0.9, nesterov=True)


class Schedule:
    """Linear warm-up over ``warmup_fraction`` of the steps, then cosine decay to 0."""

    def __init__(self, peak_lr: float, steps: int, warmup_fraction: float) -> None:
        if not 0 <= warmup_fraction < 1:
            raise ConfigError(f"warmup_fraction must be in [0, 1), got {warmup_fraction!r}")
        self.peak_lr, self.steps = peak_lr, steps
        self.warmup = max(1, round(warmup_fraction * steps)) if warmup_fraction > 0 else 0

    def lr(self, step: int) -> float:
        """The learning rate of ``step``."""
        return self.peak_lr * lr_factor(step, self.steps, self.warmup)
