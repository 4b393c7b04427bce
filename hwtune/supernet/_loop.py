"""Pieces of a training loop shared by elastic parent training and distilled fine-tuning.

Same conventions as ``hwtune.training.train`` (SGD with Nesterov momentum 0.9, linear warm-up
then cosine decay, no weight decay on BatchNorm and biases), from the helpers it exports.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch

from hwtune.data import DataSplits, TensorData
from hwtune.errors import ConfigError, DataError, TrainingDivergedError
from hwtune.training import lr_factor, num_threads, param_groups

__all__ = [
    "Clock",
    "Schedule",
    "batch_fetcher",
    "check_batch_size",
    "check_loss",
    "check_positive",
    "num_threads",
    "plan_batches",
    "run_steps",
    "sgd",
    "train_split",
]

WARMUP_FRACTION = 0.05
WEIGHT_DECAY = 5e-4
# Cross-entropy of a 10-class model starts at ln(10) = 2.3; far above that the weights have blown up.
DIVERGENCE_LOSS = 1e4


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
    ds = data.train if isinstance(data, DataSplits) else data
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
    """Linear warm-up over ``warmup_fraction`` of the steps, then cosine decay to 0; sets the lr."""

    def __init__(self, opt: torch.optim.Optimizer, peak_lr: float, steps: int, warmup_fraction: float) -> None:
        if not 0 <= warmup_fraction < 1:
            raise ConfigError(f"warmup_fraction must be in [0, 1), got {warmup_fraction!r}")
        self.opt, self.peak_lr, self.steps = opt, peak_lr, steps
        self.warmup = max(1, round(warmup_fraction * steps)) if warmup_fraction > 0 else 0

    def set(self, step: int) -> float:
        lr = self.peak_lr * lr_factor(step, self.steps, self.warmup)
        for g in self.opt.param_groups:
            g["lr"] = lr
        return lr


def check_loss(value: float, step: int, steps: int, lr: float, what: str) -> None:
    """``TrainingDivergedError`` when ``value`` is NaN/inf or absurdly large."""
    if not math.isfinite(value) or value > DIVERGENCE_LOSS:
        raise TrainingDivergedError(
            f"{what} diverged at step {step + 1}/{steps}: loss {value:.4g} (lr {lr:.3g}); lower lr="
        )


class Clock:
    """Wall-clock time since start, and whether a time limit has passed."""

    def __init__(self, limit_s: float | None) -> None:
        self.start = time.perf_counter()
        self.limit_s = limit_s

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start

    def expired(self) -> bool:
        return self.limit_s is not None and self.seconds >= self.limit_s


def progress_bar(total: int, enabled: bool, desc: str) -> Any:
    from hwtune.progress import progress_bar as bar

    return bar(total, desc=desc, unit="batch", enabled=enabled)


def run_steps(
    batches: list[torch.Tensor],
    fetch: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    step_fn: Callable[[torch.Tensor, torch.Tensor, int, float], float],
    schedule: Schedule,
    *,
    device: torch.device,
    time_limit_s: float | None,
    progress: bool,
    desc: str,
) -> tuple[list[float], int, float]:
    """Run ``step_fn(x, y, step, lr) -> loss`` over ``batches`` with the lr schedule, checking the
    loss and the time limit. Returns ``(losses, samples seen, seconds)``."""
    losses: list[float] = []
    seen = 0
    bar = progress_bar(len(batches), progress, desc)
    clock = Clock(time_limit_s)
    try:
        for step, idx in enumerate(batches):
            if step > 0 and clock.expired():  # at least one step, so the stats are defined
                break
            x, y = fetch(idx)
            lr = schedule.set(step)
            value = step_fn(x.to(device), y.to(device), step, lr)
            check_loss(value, step, len(batches), lr, desc)
            losses.append(value)
            seen += len(y)
            bar.update(1)
    finally:
        bar.close()
    return losses, seen, clock.seconds
