"""Knowledge distillation: the loss, and short distilled fine-tuning of an extracted sub-network.

Loss of a student with logits ``s``, teacher logits ``t``, labels ``y``, temperature ``T`` and
weight ``a`` (``kd_weight``)::

    (1 - a) * CE(s, y)  +  a * T^2 * KL(softmax(t / T) || softmax(s / T))

(Hinton et al. 2015; the ``T^2`` keeps the soft term's gradients at the scale of the hard one).
``a = 0`` is plain training on labels, ``a = 1`` pure distillation (BigNAS's in-place
distillation uses ``a = 1, T = 1``).

Fine-tuning is what a successive-halving rung spends on a candidate with inherited weights
(a fraction of an epoch) and what finalizing a chosen candidate spends (tens of epochs to
convergence). Both are one cosine cycle here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hwtune.augment import augmenter
from hwtune.engine import choose_memory_format, device_name, on_device, resolve_amp, resolve_device, run_loop
from hwtune.errors import ConfigError, ModelError
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

__all__ = ["FINETUNE_BASE_LR", "FinetuneStats", "distill_loss", "finetune"]

# Peak learning rate at batch 128 (scaled linearly with the batch size).
FINETUNE_BASE_LR = 0.05


def distill_loss(
    logits: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    labels: torch.Tensor,
    *,
    kd_weight: float = 0.5,
    temperature: float = 1.0,
) -> torch.Tensor:
    """``(1 - kd_weight) * CE + kd_weight * T^2 * KL(teacher || student)``; CE alone without a teacher."""
    ce = F.cross_entropy(logits, labels)
    if teacher_logits is None or kd_weight == 0:
        return ce
    t = temperature
    kd = F.kl_div(
        F.log_softmax(logits / t, dim=1),
        F.log_softmax(teacher_logits.detach() / t, dim=1),
        reduction="batchmean",
        log_target=True,
    ) * (t * t)
    return (1.0 - kd_weight) * ce + kd_weight * kd


def check_kd(kd_weight: float, temperature: float) -> None:
    """``ConfigError`` unless ``0 <= kd_weight <= 1`` and ``temperature > 0``."""
    if isinstance(kd_weight, bool) or not isinstance(kd_weight, (int, float)) or not 0 <= kd_weight <= 1:
        raise ConfigError(f"kd_weight must be a number in [0, 1], got {kd_weight!r}")
    check_positive(temperature=temperature)


@dataclass(frozen=True)
class FinetuneStats(VersionedRecord):
    """What one :func:`finetune` call did.

    Attributes:
        epochs: Passes over the training split actually done (less than asked when stopped early).
        steps: Optimizer steps.
        samples_seen: Training images processed.
        seconds: Wall-clock time.
        first_loss: Mean loss over the first steps (up to 10).
        final_loss: Mean loss over the last steps (up to 50).
        peak_lr: Learning rate at the end of the warm-up.
        kd_weight: Distillation weight (0 without a teacher).
        temperature: Distillation temperature.
        batch_size: Batch size.
        threads: Torch threads.
        seed: Seed of the sample order.
        stopped_early: The time limit ended the run.
        augment: The augmentation of the training batches (``"none"``: the images as they are).
        device: Where it trained (``"cpu"``, ``"cuda:0 (NVIDIA H100 80GB HBM3)"``).
        amp: Mixed precision used (``"fp32"``, ``"bf16"``, ``"fp16"``).
        memory_format: ``"channels_last (measured 1.52x)"`` or ``"contiguous (...)"``
            (:func:`hwtune.engine.choose_memory_format`).
    """

    epochs: float
    steps: int
    samples_seen: int
    seconds: float
    first_loss: float
    final_loss: float
    peak_lr: float
    kd_weight: float
    temperature: float
    batch_size: int
    threads: int
    seed: int
    stopped_early: bool = False
    augment: str = "none"
    device: str = "cpu"
    amp: str = "fp32"
    memory_format: str = "contiguous"



def finetune(
    model: nn.Module,
    data: Any,
    *,
    epochs: float,
    teacher: nn.Module | None = None,
    lr: float | None = None,
    batch_size: int = 128,
    seed: int = 0,
    threads: int | None = None,
    kd_weight: float = 0.5,
    temperature: float = 1.0,
    weight_decay: float = 5e-4,
    warmup_fraction: float = WARMUP_FRACTION,
    time_limit_s: float | None = None,
    progress: bool = False,
    augment: str | None = None,
    train_device: str | torch.device | None = None,
    amp: str | None = None,
) -> FinetuneStats:
    """Fine-tune ``model`` in place, distilled from ``teacher`` when one is given.

    One learning-rate cycle: linear warm-up, cosine decay to zero at the end of ``epochs`` (so a
    long call is the finalize schedule and a short one a rung's). SGD with Nesterov momentum.
    The teacher runs in eval mode without gradients (its mode is restored).

    Args:
        model: The (extracted) model to train.
        data: A ``DataSplits`` (its training split is used) or a Dataset.
        epochs: Passes over the training split (fractional allowed).
        teacher: The parent (or any model with the same classes); ``None`` trains on labels only.
        lr: Peak learning rate; default ``0.05 * batch_size / 128`` (half of ``hwtune.training``'s
            from-scratch default: the weights start trained).
        batch_size: Images per step.
        seed: Seed of the sample order and of dropout; the global RNG state is restored.
        threads: Torch threads (restored afterwards).
        kd_weight: Weight of the distillation term (module docstring); ignored without a teacher.
        temperature: Distillation temperature.
        weight_decay: On weights only, not BatchNorm or biases.
        warmup_fraction: Share of the steps of linear warm-up.
        time_limit_s: Stop after this much wall-clock time (the schedule is not shortened).
        progress: A tqdm bar on stderr.
        augment: A registered augmentation of the training batches (:mod:`hwtune.augment`; the
            teacher sees the same augmented batch); ``None`` trains on the images as they are.
        train_device: Train (and run the teacher) on this device (``auto``, ``cpu``, ``cuda``,
            ``cuda:N``, ``mps``; :func:`hwtune.engine.resolve_device`); both move back afterwards.
            Default: where the model's parameters are.
        amp: Mixed precision (:func:`hwtune.engine.resolve_amp`); ``auto`` is off on the CPU.

    Raises:
        ConfigError: a setting out of range, or an unknown augmentation.
        TrainingDivergedError: the loss became NaN/inf.
    """
    check_positive(epochs=epochs, lr=lr, time_limit_s=time_limit_s)
    check_kd(kd_weight, temperature)
    check_batch_size(batch_size)
    augment_fn = augmenter(augment, seed)
    if teacher is None:
        kd_weight = 0.0
    ds = train_split(data)
    params = list(model.parameters())
    if not params:
        raise ModelError(f"{type(model).__name__} has no parameters to train")
    device = resolve_device(train_device) if train_device is not None else params[0].device
    precision = resolve_amp(amp, device)
    peak_lr = float(lr) if lr is not None else FINETUNE_BASE_LR * batch_size / 128
    batches = plan_batches(len(ds), batch_size, max(2, round(epochs * len(ds))), seed)
    schedule = Schedule(peak_lr, len(batches), warmup_fraction)
    was_training = model.training
    teacher_training = teacher.training if teacher is not None else False

    def objective(x: torch.Tensor, y: torch.Tensor, backward: Any) -> float:
        with torch.no_grad():
            t_logits = teacher(x) if teacher is not None else None
        loss = distill_loss(model(x), t_logits, y, kd_weight=kd_weight, temperature=temperature)
        backward(loss)
        return float(loss.detach())

    with num_threads(threads) as n_threads, torch.random.fork_rng(devices=[]), on_device([model, teacher], device):
        fmt = choose_memory_format(model, ds, device, precision, batch_size)
        torch.manual_seed(seed)
        model.train()
        if teacher is not None:
            teacher.eval()
        try:
            with fmt.applied(model, teacher):
                done = run_loop(
                    fetch_batches(ds, batches, pin_memory=device.type == "cuda"),
                    objective,
                    sgd(model, peak_lr, weight_decay),
                    schedule.lr,
                    steps=len(batches),
                    device=device,
                    precision=precision,
                    augment=augment_fn,
                    memory_format=fmt.memory_format,
                    time_limit_s=time_limit_s,
                    progress=progress,
                    desc="fine-tuning",
                )
        finally:
            model.train(was_training)
            if teacher is not None:
                teacher.train(teacher_training)
    losses, seen, seconds = done.losses, done.seen, done.seconds
    return FinetuneStats(
        epochs=seen / len(ds),
        steps=len(losses),
        samples_seen=seen,
        seconds=seconds,
        first_loss=float(np.mean(losses[:10])),
        final_loss=float(np.mean(losses[-50:])),
        peak_lr=peak_lr,
        kd_weight=float(kd_weight),
        temperature=float(temperature),
        batch_size=batch_size,
        threads=n_threads,
        seed=seed,
        stopped_early=len(losses) < len(batches),
        augment=augment or "none",
        device=device_name(device),
        amp=precision.name,
        memory_format=fmt.name,
    )
