"""Budgeted training and evaluation for torch modules and ONNX files.

A search trains many candidates cheaply, so the budget is a number of samples or a (possibly
fractional) number of epochs, and the defaults are chosen to get a small CNN to a useful accuracy
on Fashion-MNIST within one epoch: SGD with Nesterov momentum 0.9, peak learning rate
``0.1 × batch_size / 128`` (linear scaling), a short linear warm-up (5 % of the steps) and a cosine
decay to zero, weight decay 5e-4 on weights only (not on BatchNorm/bias).

Measured on this 2-core AVX2 host, 1 thread, seed 0, one epoch (50,000 images), validation split:
  - 16/16/32/32-channel convnet, global-average-pool head: SGD lr 0.05 / 0.1 / 0.2 gave
    81.3 / 83.1 / 79.3 %, AdamW 3e-3 80.7 %, SGD 0.1 at batch 64 84.0 % -> SGD 0.1 is the default.
  - ``convnet`` width (16, 32): 78.6 % (37 s); width (16, 32, 64): 85.5 %; the same (16, 32)
    convs with a 2x2 max-pool + flatten head instead of global average pooling: 89.8 %. Width
    (16, 32) with the GAP head reaches only 84.5 % after 3 epochs: at this size the head, not the
    schedule, limits accuracy.

Batches come straight from in-memory tensors when the dataset has them
(:class:`hwtune.data.TensorData`, ``TensorDataset``); other datasets go through a DataLoader.

Example:
    >>> from hwtune.data import load_dataset
    >>> from hwtune.training import TrainBudget, evaluate, train
    >>> splits = load_dataset("fashion-mnist")                       # doctest: +SKIP
    >>> stats = train(model, splits, budget=TrainBudget(epochs=1))   # doctest: +SKIP
    >>> evaluate(model, splits.val).accuracy                         # doctest: +SKIP
    0.855
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from hwtune.augment import augmenter
from hwtune.data import DataSplits, iter_batches
from hwtune.engine import (
    choose_memory_format,
    device_name,
    lr_factor,
    num_threads,
    on_device,
    param_groups,
    resolve_amp,
    resolve_device,
    run_loop,
)
from hwtune.errors import ConfigError, ModelError, did_you_mean
from hwtune.records import VersionedRecord
from hwtune.runtimes import DEFAULT_EVAL_BATCH, EvalResult, ShippedModel, get_runtime, runtime_for_file

__all__ = [
    "EvalResult",
    "OptimConfig",
    "TrainBudget",
    "TrainStats",
    "evaluate",
    "lr_factor",
    "num_threads",
    "param_groups",
    "train",
]

SCHEMA_VERSION = 1
OPTIMIZERS = ("sgd", "adamw")
# Base learning rates at batch size 128, scaled linearly with the batch size. Measured (module
# report): SGD-Nesterov 0.1 and AdamW 3e-3 are both near the top of their 1-epoch curves.
BASE_LR = {"sgd": 0.1, "adamw": 3e-3}
BASE_BATCH = 128
DEFAULT_WEIGHT_DECAY = {"sgd": 5e-4, "adamw": 0.05}
WARMUP_FRACTION = 0.05
# Evaluation batch (64: see hwtune.runtimes.DEFAULT_EVAL_BATCH for the measurement behind it).
EVAL_BATCH = DEFAULT_EVAL_BATCH


# --------------------------------------------------------------------------------------------
# Value objects
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainBudget:
    """How much to train: ``epochs`` (fractional allowed) or ``samples``, exactly one of them.

    Example:
        >>> TrainBudget(epochs=0.25).num_samples(50_000)
        12500
        >>> TrainBudget.parse("20k samples")
        TrainBudget(epochs=None, samples=20000)
    """

    epochs: float | None = None
    samples: int | None = None

    def __post_init__(self) -> None:
        problems = []
        if (self.epochs is None) == (self.samples is None):
            problems.append(
                f"TrainBudget needs exactly one of epochs= or samples=, got epochs={self.epochs!r}, "
                f"samples={self.samples!r}"
            )
        if self.epochs is not None and (
            isinstance(self.epochs, bool)
            or not isinstance(self.epochs, (int, float))
            or not math.isfinite(self.epochs)
            or self.epochs <= 0
        ):
            problems.append(f"TrainBudget.epochs must be a number > 0, got {self.epochs!r}")
        if self.samples is not None and (
            isinstance(self.samples, bool) or not isinstance(self.samples, (int, np.integer)) or self.samples < 1
        ):
            problems.append(f"TrainBudget.samples must be an integer >= 1, got {self.samples!r}")
        if problems:
            raise ConfigError("\n".join(problems))

    def num_samples(self, train_size: int) -> int:
        """Number of training samples this budget means for a training split of ``train_size``."""
        if self.samples is not None:
            return int(self.samples)
        assert self.epochs is not None  # __post_init__ guarantees one of the two
        return max(1, math.ceil(self.epochs * train_size))

    @classmethod
    def parse(cls, text: str) -> TrainBudget:
        """Parse ``"1.5 epochs"``, ``"0.5ep"``, ``"20000 samples"``, ``"20k"`` (a bare count is samples)."""
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([km]?)\s*(ep|epoch|epochs|samples?|)\s*", str(text).lower())
        if not m:
            raise ConfigError(
                f"cannot parse training budget {text!r}; expected e.g. '1 epoch', '0.5ep' or '20000 samples'"
            )
        value = float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6}[m.group(2)]
        if m.group(3).startswith("ep"):
            return cls(epochs=value)
        if value != int(value):
            raise ConfigError(f"training budget {text!r}: a sample count must be a whole number")
        return cls(samples=int(value))

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "epochs": self.epochs, "samples": self.samples}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainBudget:
        return cls(epochs=d.get("epochs"), samples=d.get("samples"))


@dataclass(frozen=True)
class TrainStats(VersionedRecord):
    """What one :func:`train` call did.

    Attributes:
        samples_seen: Training samples processed (``steps`` batches).
        steps: Optimizer steps.
        epochs: ``samples_seen / len(train split)``.
        first_loss: Mean training loss over the first steps (up to 10).
        final_loss: Mean training loss over the last steps (up to 50).
        seconds: Wall-clock time of the loop.
        samples_per_s: Throughput.
        peak_lr: Learning rate at the end of the warm-up.
        optimizer: ``"sgd"`` or ``"adamw"``.
        batch_size: Batch size.
        threads: Torch intra-op threads used.
        seed: Seed of the sample order and initialization-time randomness.
        device: Where it trained (``"cpu"``, ``"cuda:0 (NVIDIA H100 80GB HBM3)"``).
        amp: Mixed precision used (``"fp32"``, ``"bf16"``, ``"fp16"``).
        augment: Augmentation of the training batches (``"none"``: the images as they are).
        memory_format: ``"channels_last"`` or ``"contiguous"``, and why (``"channels_last (measured
            1.52x)"``, ``"contiguous (asked)"``).
    """

    samples_seen: int
    steps: int
    epochs: float
    first_loss: float
    final_loss: float
    seconds: float
    samples_per_s: float
    peak_lr: float
    optimizer: str
    batch_size: int
    threads: int
    seed: int
    device: str = "cpu"
    amp: str = "fp32"
    augment: str = "none"
    memory_format: str = "contiguous"



# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _train_split(data: Any) -> Any:
    return data.train if isinstance(data, DataSplits) else data


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OptimConfig:
    """How :func:`train` optimizes: optimizer, learning rate, weight decay and schedule settings.

    Attributes:
        optimizer: ``"sgd"`` (Nesterov, momentum 0.9) or ``"adamw"``.
        lr: Peak learning rate; default ``0.1 × batch_size / 128`` (SGD) or ``3e-3 × sqrt(batch_size / 128)``
            (AdamW).
        weight_decay: Default 5e-4 (SGD) or 0.05 (AdamW); never applied to BatchNorm or biases.
        warmup_fraction: Share of the steps spent warming the learning rate up linearly.
        label_smoothing: Cross-entropy label smoothing.
        max_grad_norm: Clip the gradient norm to this value (default: no clipping).

    Example:
        >>> OptimConfig().peak_lr(256)
        0.2
    """

    optimizer: str = "sgd"
    lr: float | None = None
    weight_decay: float | None = None
    warmup_fraction: float = WARMUP_FRACTION
    label_smoothing: float = 0.0
    max_grad_norm: float | None = None

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(
                f"unknown optimizer {self.optimizer!r}; expected one of {', '.join(OPTIMIZERS)}"
                f"{did_you_mean(str(self.optimizer), OPTIMIZERS)}"
            )
        lr, wd = self.lr, self.weight_decay
        problems = []
        if lr is not None and not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            problems.append(f"lr must be a number > 0, got {lr!r}")
        if wd is not None and not (isinstance(wd, (int, float)) and wd >= 0):
            problems.append(f"weight_decay must be a number >= 0, got {wd!r}")
        if not 0 <= self.warmup_fraction < 1:
            problems.append(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction!r}")
        if not 0 <= self.label_smoothing < 1:
            problems.append(f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}")
        if problems:
            raise ConfigError("\n".join(problems))

    def peak_lr(self, batch_size: int) -> float:
        """The peak learning rate at ``batch_size``: ``lr``, or the optimizer's base rate scaled."""
        if self.lr is not None:
            return float(self.lr)
        if self.optimizer == "sgd":
            return BASE_LR["sgd"] * batch_size / BASE_BATCH  # linear scaling rule (Goyal et al. 2017)
        return BASE_LR["adamw"] * (batch_size / BASE_BATCH) ** 0.5  # square-root rule for adaptive methods

    def make(self, model: torch.nn.Module, peak_lr: float) -> torch.optim.Optimizer:
        """A fresh optimizer over ``model`` (weights decayed, BatchNorm and biases not)."""
        wd = DEFAULT_WEIGHT_DECAY[self.optimizer] if self.weight_decay is None else float(self.weight_decay)
        groups = param_groups(model, wd)
        if self.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=peak_lr, momentum=0.9, nesterov=True)
        return torch.optim.AdamW(groups, lr=peak_lr)


def _plan_batches(n_train: int, total_samples: int, batch_size: int, seed: int) -> list[torch.Tensor]:
    """The sample stream: whole shuffled epochs back to back, cut at the budget, in batches (none of one)."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.cat([torch.randperm(n_train, generator=gen) for _ in range(math.ceil(total_samples / n_train))])
    batches = list(order[:total_samples].split(batch_size))
    if len(batches) > 1 and len(batches[-1]) < 2:
        # A batch of one breaks BatchNorm in training mode; fold it into the previous batch.
        last = batches.pop()
        batches[-1] = torch.cat([batches[-1], last])
    return batches


def train(
    model: torch.nn.Module,
    data: Any,
    *,
    budget: TrainBudget,
    batch_size: int = 128,
    optim: OptimConfig | None = None,
    seed: int = 0,
    threads: int | None = None,
    progress: bool = False,
    num_workers: int | None = None,
    train_device: str | torch.device | None = None,
    amp: str | None = None,
    augment: str | None = None,
    channels_last: bool | None = None,
    **optim_settings: Any,
) -> TrainStats:
    """Train ``model`` in place for ``budget`` on the training split of ``data``.

    Each call is one learning-rate cycle (warm-up then cosine decay) with a fresh optimizer, so
    calling it again on the same model continues training with a warm restart.

    Args:
        model: The module to train (in place). Its parameters' device is used for the batches.
        data: A :class:`hwtune.data.DataSplits` (its ``train`` split is used) or a Dataset.
        budget: How many samples / epochs to train.
        batch_size: Samples per step.
        optim: Optimizer and schedule settings (:class:`OptimConfig`); or give its fields as
            keywords (``lr=``, ``weight_decay=``, ``optimizer=``, ``warmup_fraction=``,
            ``label_smoothing=``, ``max_grad_norm=``), not both.
        seed: Seeds the sample order and any randomness in the model (dropout); the caller's
            global RNG state is restored afterwards.
        threads: Torch intra-op threads for this call (restored afterwards); default: unchanged.
        progress: Show a tqdm progress bar on stderr.
        num_workers: DataLoader workers for datasets that are not in memory (default: what the dataset
            asks for: a streamed image folder's workers, else 0).
        train_device: Train on this device (:func:`hwtune.engine.resolve_device`: ``auto``, ``cpu``,
            ``cuda``, ``cuda:N``, ``mps``); the model moves there for the call and back afterwards.
            Default: where the model's parameters are.
        amp: Mixed precision (:func:`hwtune.engine.resolve_amp`): ``auto`` (accelerators only),
            ``bf16``, ``fp16`` or ``off``.
        augment: An augmentation of the training batches (:mod:`hwtune.augment`); default none.
        channels_last: Train 4-D image models in the channels-last memory format; default: where a
            quick measurement says it is faster (:func:`hwtune.engine.choose_memory_format`).

    Returns:
        Loss, throughput and the settings used.

    Raises:
        TrainingDivergedError: The loss or gradient became NaN/inf, or the loss exceeded 1e4; the
            message gives the step and the loss.
        ConfigError: A setting is out of range.
    """
    if not isinstance(budget, TrainBudget):
        raise ConfigError(f"budget must be a TrainBudget, got {type(budget).__name__}; e.g. TrainBudget(epochs=1)")
    unknown = sorted(set(optim_settings) - set(OptimConfig.__dataclass_fields__))
    if unknown:
        raise ConfigError(f"train() got unknown settings {', '.join(unknown)}{did_you_mean(unknown[0], ALL_KEYS)}")
    if optim is not None and optim_settings:
        raise ConfigError(f"give optim= or {', '.join(sorted(optim_settings))}=, not both")
    problems = []
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        problems.append(f"batch_size must be a positive integer, got {batch_size!r}")
    try:
        optim = optim or OptimConfig(**optim_settings)
    except ConfigError as exc:  # reported with the batch size, every problem at once
        problems.append(str(exc))
    if problems:
        raise ConfigError("\n".join(problems))
    assert optim is not None  # for the type checker: built just above
    ds = _train_split(data)
    n_train = len(ds)
    if n_train == 0:
        raise ConfigError("cannot train on an empty training split")
    total_samples = budget.num_samples(n_train)
    peak_lr = optim.peak_lr(batch_size)
    params = list(model.parameters())
    if not params:
        raise ModelError(f"{type(model).__name__} has no parameters to train")
    device = resolve_device(train_device) if train_device is not None else params[0].device
    precision = resolve_amp(amp, device)
    augment_fn = augmenter(augment, seed)

    with num_threads(threads) as n_threads, torch.random.fork_rng(devices=[]), on_device([model], device):
        batches = _plan_batches(n_train, total_samples, batch_size, seed)
        steps = len(batches)
        warmup = max(1, round(optim.warmup_fraction * steps)) if optim.warmup_fraction > 0 else 0
        fmt = choose_memory_format(model, ds, device, precision, batch_size, channels_last)
        torch.manual_seed(seed)
        opt = optim.make(model, peak_lr)

        def objective(x: torch.Tensor, y: torch.Tensor, backward: Any) -> float:
            loss = F.cross_entropy(model(x), y, label_smoothing=optim.label_smoothing)
            backward(loss)
            return float(loss.detach())

        was_training = model.training
        model.train()
        try:
            with fmt.applied(model):
                done = run_loop(
                    iter_batches(ds, batches, num_workers=num_workers, pin_memory=device.type == "cuda"),
                    objective,
                    opt,
                    lambda step: peak_lr * lr_factor(step, steps, warmup),
                    steps=steps,
                    device=device,
                    precision=precision,
                    augment=augment_fn,
                    memory_format=fmt.memory_format,
                    max_grad_norm=optim.max_grad_norm,
                    check_grad=True,
                    progress=progress,
                    desc="training",
                )
        finally:
            model.train(was_training)

    losses = done.losses
    return TrainStats(
        samples_seen=done.seen,
        steps=steps,
        epochs=done.seen / n_train,
        first_loss=float(np.mean(losses[:10])),
        final_loss=float(np.mean(losses[-50:])),
        seconds=done.seconds,
        samples_per_s=done.seen / done.seconds if done.seconds > 0 else float("inf"),
        peak_lr=peak_lr,
        optimizer=optim.optimizer,
        batch_size=batch_size,
        threads=n_threads,
        seed=seed,
        device=device_name(device),
        amp=precision.name,
        augment=augment or "none",
        memory_format=fmt.name,
    )


ALL_KEYS = ("optim", *OptimConfig.__dataclass_fields__)


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


def evaluate(
    model_or_file: Any,
    dataset: Any,
    *,
    batch_size: int = EVAL_BATCH,
    limit: int | None = None,
    threads: int | None = None,
) -> EvalResult:
    """Accuracy and mean cross-entropy of a torch module or a shipped file on ``dataset``.

    The runtime comes from the registry (:mod:`hwtune.runtimes`): a module runs on ``torch`` (eval
    mode under ``torch.inference_mode``, its mode restored), a file on the runtime of its suffix
    (``.onnx`` -> ``onnxruntime``; fp16 inputs are cast, a fixed batch dimension is fed exactly), a
    :class:`~hwtune.runtimes.ShippedModel` on the runtime that shipped it, and an open
    ``onnxruntime.InferenceSession`` on ``onnxruntime``.

    Args:
        model_or_file: ``torch.nn.Module``, path to a shipped file, ShippedModel or InferenceSession.
        dataset: One split, e.g. ``splits.val`` (model selection) or ``splits.test`` (final report).
        batch_size: Samples per forward pass.
        limit: Evaluate on a fixed random subset (seed 0) of ``limit`` samples; the same subset
            every call, so torch and ONNX results on it are comparable.
        threads: Intra-op threads (default: the runtime's current / default setting).

    Raises:
        ConfigError: ``dataset`` is a whole ``DataSplits``, a setting is out of range, or no
            registered runtime runs the file's suffix.
        ModelError: The file cannot be loaded or the model output has the wrong shape.
    """
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"threads must be a positive integer or None, got {threads!r}")
    if isinstance(model_or_file, torch.nn.Module):
        rt = get_runtime("torch")
    elif isinstance(model_or_file, ShippedModel):
        rt = get_runtime(model_or_file.runtime)
    elif hasattr(model_or_file, "run") and hasattr(model_or_file, "get_inputs"):
        rt = get_runtime("onnxruntime")  # an open InferenceSession
    else:
        rt = runtime_for_file(model_or_file)
    rt.require()
    return rt.evaluate(model_or_file, dataset, batch_size=batch_size, limit=limit, threads=threads)
