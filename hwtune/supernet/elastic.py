"""Elastic training of a parent for its sub-networks, with the sandwich rule.

Every step trains, on one batch and with one optimizer step, the largest network (the parent
itself, on the labels), the smallest and ``n_random`` random sub-networks of the space (each
distilled from the largest's outputs of that step, see ``hwtune.supernet.distill``); gradients
of all of them accumulate in the parent's shared weights (Yu et al., "BigNAS", ECCV 2020; "the
sandwich rule" from Yu & Huang, "Universally slimmable networks", ICCV 2019). Sub-networks run
as views on the parent (``SubnetView``): their channels are each group's *first* ones, so a
sub-network extracted afterwards with ``order=None`` gets exactly the weights it was trained with.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hwtune.engine import choose_memory_format, device_name, on_device, resolve_amp, resolve_device, run_loop
from hwtune.errors import ConfigError
from hwtune.records import VersionedRecord
from hwtune.supernet._loop import (
    WARMUP_FRACTION,
    Schedule,
    check_batch_size,
    check_positive,
    fetch_batches,
    num_threads,
    plan_batches,
    sgd,
    train_split,
)
from hwtune.supernet.distill import check_kd, distill_loss
from hwtune.supernet.extract import SubnetView
from hwtune.supernet.parent import largest_candidate, smallest_candidate

if TYPE_CHECKING:  # pragma: no cover
    from hwtune.space import SearchSpace

__all__ = ["ParentStats", "sandwich_step", "train_parent"]

BASE_LR = 0.1  # at batch 128, like hwtune.training's from-scratch default


@dataclass(frozen=True)
class ParentStats(VersionedRecord):
    """What one :func:`train_parent` call did.

    Attributes:
        largest: The parent candidate (``Candidate.to_dict``).
        smallest: The sandwich's smallest candidate.
        epochs: Passes over the training split done (less than asked when stopped early).
        steps: Optimizer steps (each = 2 + ``n_random`` forward/backward passes).
        samples_seen: Training images processed (per network).
        seconds: Wall-clock time of the loop.
        seconds_per_epoch: ``seconds / epochs``.
        first_loss: Largest network's mean loss over the first steps (up to 10).
        final_loss: Largest network's mean loss over the last steps (up to 50).
        final_sub_loss: Mean distillation loss of the other networks over the last steps.
        peak_lr: Learning rate after the warm-up.
        n_random: Random sub-networks per step.
        kd_weight: Distillation weight of the sub-networks' loss.
        temperature: Distillation temperature.
        batch_size: Batch size.
        threads: Torch threads.
        seed: Seed of the initialization, sample order and sub-network draws.
        stopped_early: The time limit ended the run.
        device: Where it trained (``"cpu"``, ``"cuda:0 (NVIDIA H100 80GB HBM3)"``).
        amp: Mixed precision used (``"fp32"``, ``"bf16"``, ``"fp16"``).
        memory_format: ``"channels_last (measured 1.52x)"`` or ``"contiguous (...)"``.
    """

    largest: Mapping[str, Any]
    smallest: Mapping[str, Any]
    epochs: float
    steps: int
    samples_seen: int
    seconds: float
    seconds_per_epoch: float
    first_loss: float
    final_loss: float
    final_sub_loss: float
    peak_lr: float
    n_random: int
    kd_weight: float
    temperature: float
    batch_size: int
    threads: int
    seed: int
    stopped_early: bool = False
    device: str = "cpu"
    amp: str = "fp32"
    memory_format: str = "contiguous"



def sandwich_step(
    parent: nn.Module,
    view: SubnetView,
    subnets: Sequence[Any],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    kd_weight: float = 0.5,
    temperature: float = 1.0,
    backward: Callable[[torch.Tensor], None] | None = None,
) -> tuple[float, float]:
    """Forward and backward the parent on labels and each sub-network distilled from it.

    Gradients accumulate in the parent's ``.grad`` (the caller zeroes them before and steps the
    optimizer after). Each network's graph is freed before the next one runs. ``backward`` is
    called on each loss (default ``loss.backward()``; the training loop passes its own, which checks
    the loss and scales it for fp16).

    Returns:
        ``(parent's loss, mean loss of the sub-networks)``.
    """
    backward = backward or torch.Tensor.backward
    logits = parent(x)
    loss = F.cross_entropy(logits, y)
    backward(loss)
    teacher = logits.detach()
    sub_losses = []
    for candidate in subnets:
        sub_loss = distill_loss(view(candidate, x), teacher, y, kd_weight=kd_weight, temperature=temperature)
        backward(sub_loss)
        sub_losses.append(float(sub_loss.detach()))
    return float(loss.detach()), float(np.mean(sub_losses)) if sub_losses else 0.0


def train_parent(
    space: SearchSpace,
    data: Any,
    *,
    epochs: float,
    batch_size: int = 128,
    lr: float | None = None,
    seed: int = 0,
    n_random: int = 2,
    threads: int | None = None,
    progress: bool = False,
    time_limit_s: float | None = None,
    kd_weight: float = 0.5,
    temperature: float = 1.0,
    weight_decay: float = 5e-4,
    warmup_fraction: float = WARMUP_FRACTION,
    parent: nn.Module | None = None,
    train_device: str | torch.device | None = None,
    amp: str | None = None,
) -> tuple[nn.Module, ParentStats]:
    """Train the space's largest candidate so that its sub-networks are good too.

    Args:
        space: A sliceable recipe ``SearchSpace`` (not any ``SpaceLike``: the sandwich rule builds and
            samples candidates of a sliceable family, which a compress space is not).
        data: A ``DataSplits`` (its training split is used) or a Dataset.
        epochs: Passes over the training split (fractional allowed).
        batch_size: Images per step (each network sees the same batch).
        lr: Peak learning rate of SGD-Nesterov; default ``0.1 * batch_size / 128``.
        seed: Seeds the parent's initialization, the sample order and the sub-network draws.
        n_random: Random sub-networks per step besides the largest and the smallest.
        threads: Torch threads (restored afterwards).
        progress: A tqdm bar on stderr.
        time_limit_s: Stop after this much wall-clock time (the cosine schedule is not shortened).
        kd_weight: Distillation weight of the sub-networks' loss (``hwtune.supernet.distill``).
        temperature: Distillation temperature.
        weight_decay: On weights only, not BatchNorm or biases.
        warmup_fraction: Share of the steps of linear warm-up.
        parent: Continue training this parent (built for ``largest_candidate(space)``) instead of
            a freshly initialized one.
        train_device: Train on this device (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``;
            :func:`hwtune.engine.resolve_device`); the parent comes back where it was built.
            Default: where the parent's parameters are (the CPU for a fresh one).
        amp: Mixed precision (:func:`hwtune.engine.resolve_amp`); ``auto`` is off on the CPU.

    Returns:
        ``(parent in eval mode, stats)``.

    Raises:
        ConfigError: the space is not sliceable, or a setting is out of range.
        TrainingDivergedError: a loss became NaN/inf.
    """
    check_positive(epochs=epochs, lr=lr, time_limit_s=time_limit_s)
    check_kd(kd_weight, temperature)
    check_batch_size(batch_size)
    if isinstance(n_random, bool) or not isinstance(n_random, int) or n_random < 0:
        raise ConfigError(f"n_random must be an integer >= 0, got {n_random!r}")
    largest, smallest = largest_candidate(space), smallest_candidate(space)
    ds = train_split(data)
    peak_lr = float(lr) if lr is not None else BASE_LR * batch_size / 128
    batches = plan_batches(len(ds), batch_size, max(2, round(epochs * len(ds))), seed)
    rng = random.Random(seed)
    device = resolve_device(train_device) if train_device is not None else None
    with num_threads(threads) as n_threads, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if parent is None:
            parent = space.build(largest)
        device = device or next(parent.parameters()).device
        precision = resolve_amp(amp, device)
        sub_losses: list[float] = []

        with (
            on_device([parent], device),
            choose_memory_format(parent, ds, device, precision, batch_size).applied(parent) as fmt,
        ):
            view = SubnetView(parent, space, cache_size=4 * (n_random + 2))

            def objective(x: torch.Tensor, y: torch.Tensor, backward: Any) -> float:
                subnets = [smallest, *(space.sample(rng) for _ in range(n_random))]
                loss, sub_loss = sandwich_step(
                    parent, view, subnets, x, y, kd_weight=kd_weight, temperature=temperature, backward=backward
                )
                sub_losses.append(sub_loss)
                return loss

            parent.train()
            try:
                done = run_loop(
                    fetch_batches(ds, batches, pin_memory=device.type == "cuda"),
                    objective,
                    sgd(parent, peak_lr, weight_decay),
                    Schedule(peak_lr, len(batches), warmup_fraction).lr,
                    steps=len(batches),
                    device=device,
                    precision=precision,
                    memory_format=fmt.memory_format,
                    time_limit_s=time_limit_s,
                    progress=progress,
                    desc="parent training",
                )
            finally:
                parent.eval()
    losses, seen, seconds = done.losses, done.seen, done.seconds
    settings = {
        "peak_lr": peak_lr,
        "n_random": n_random,
        "kd_weight": float(kd_weight),
        "temperature": float(temperature),
        "batch_size": batch_size,
        "threads": n_threads,
        "seed": seed,
        "device": device_name(device),
        "amp": precision.name,
        "memory_format": fmt.name,
    }
    return parent, _stats(largest, smallest, losses, sub_losses, seen, len(ds), seconds, len(batches), settings)


def _stats(
    largest: Any,
    smallest: Any,
    losses: list[float],
    sub_losses: list[float],
    seen: int,
    n_train: int,
    seconds: float,
    planned_steps: int,
    settings: dict[str, Any],
) -> ParentStats:
    done = seen / n_train
    return ParentStats(
        largest=largest.to_dict(),
        smallest=smallest.to_dict(),
        epochs=done,
        steps=len(losses),
        samples_seen=seen,
        seconds=seconds,
        seconds_per_epoch=seconds / done if done > 0 else float("nan"),
        first_loss=float(np.mean(losses[:10])) if losses else float("nan"),
        final_loss=float(np.mean(losses[-50:])) if losses else float("nan"),
        final_sub_loss=float(np.mean(sub_losses[-50:])) if sub_losses else float("nan"),
        stopped_early=len(losses) < planned_steps,
        **settings,
    )
