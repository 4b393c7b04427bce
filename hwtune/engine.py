"""The one training loop: every ``train``, parent (sandwich) training and distilled fine-tuning runs here.

What differs between them comes in as arguments: the *objective* (labels, distillation from a
teacher, the sandwich rule's several networks; it computes the loss and hands it to the
``backward`` the loop gives it, once or several times), the learning-rate schedule, the
augmentation of a batch and the batches themselves. The loop owns what they share: moving batches
to the training device, mixed precision, the learning rate of each step, the divergence and
gradient checks, the optimizer step, the time limit and the progress bar.

Devices (:func:`resolve_device`): ``"auto"`` is CUDA when available, else MPS, else the CPU;
``"cpu"``, ``"cuda"``, ``"cuda:N"`` and ``"mps"`` name one. A device this machine lacks is a
:class:`~hwtune.errors.ConfigError` before any work. Mixed precision (:func:`resolve_amp`):
``"auto"`` is bf16 on a CUDA device that supports it, else fp16 on CUDA and MPS, and off on the
CPU (fp32 unless asked: ``"bf16"`` on the CPU is allowed). fp16 uses a gradient scaler.

Memory format (:func:`choose_memory_format`): 4-D image models train in channels-last (NHWC) where a quick
measurement on this device says it is faster. Measured on the 2-core EPYC (AVX-512), ResNet-8 (16/32/64) train
step at batch 128: 114 ms contiguous, 75 ms channels-last; the fashion convnet gains about 1.1x. The
measurement (three timed forward+backward passes of each format on a copy of the model, a few hundred ms) runs
once per process for each device, precision, architecture (the model class and its parameters' shapes: one
search trains many architectures of one class, and they differ: on a 2-core AVX2 EPYC, fine-tuning three
fashion-convnet members for a tenth of a 60,000-image epoch took, per epoch, 14.2-14.8 s / 13.6 s (2.7 M MACs,
1.07x), 16.9-17.1 / 13.4 s (4.1 M, 1.27x) and 18.1 / 15.1-15.3 s (5.0 M, 1.19x), contiguous / channels-last),
input shape and batch size; channels-last is chosen for training when it is at least
:data:`TRAIN_CHANNELS_LAST_MIN_SPEEDUP` faster and a step takes at least :data:`MEASURE_MIN_STEP_S` (tiny models
stay contiguous: their timings are noise). Fallback: contiguous, whenever the measurement fails.
``train(channels_last=True/False)`` or ``$HWTUNE_CHANNELS_LAST=1/0`` pins it; the choice is recorded
with the trial's training device (``"cpu, fp32, channels_last (measured 1.52x)"``).

Reproducibility: seeded CPU runs give the same weights every time (for one memory format: the two
run different convolution kernels, so pin it to compare runs across machines). On CUDA, cuDNN convolution
backward kernels and ``index_add``/scatter-based ops (the batch gather of the shift augmentation)
are nondeterministic, so two seeded GPU runs agree only to rounding.

Only training moves to the accelerator: callers move the model back where it was afterwards, so
export, quantization and scoring stay on the CPU.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch

from hwtune.errors import ConfigError, ModelError, TrainingDivergedError

__all__ = [
    "AMP_MODES",
    "CHANNELS_LAST_MIN_SPEEDUP",
    "TRAIN_CHANNELS_LAST_MIN_SPEEDUP",
    "TRAIN_FORMAT_ROUNDS",
    "LoopResult",
    "MemoryFormat",
    "Precision",
    "choose_memory_format",
    "device_name",
    "lr_factor",
    "measure_memory_format",
    "num_threads",
    "on_device",
    "param_groups",
    "pinned_memory_format",
    "resolve_amp",
    "resolve_device",
    "run_loop",
]

AMP_MODES = ("auto", "bf16", "fp16", "off")
# Cross-entropy of a 10-class model starts at ln(10) = 2.3; a loss above this only happens when the
# weights have blown up, and it never comes back within a short budget.
DIVERGENCE_LOSS = 1e4
# Channels-last must beat contiguous by this much to be chosen for torch scoring (a margin over timing noise).
CHANNELS_LAST_MIN_SPEEDUP = 1.15
# ... and for training, over TRAIN_FORMAT_ROUNDS timed rounds (benchmarks/bench_memory_format.py, results in
# memory-format.json). On a 2-core AVX2 EPYC, 16 random fashion-convnet members under 100 K parameters trained
# 0.82-1.01x (6 members) or 1.09-1.27x (10) as fast in channels-last (fine-tuning on 60,000 images with
# shift-flip, timed in each format), and each of three races per member read within 0.10 of its member's ratio.
# Picking by the races: 3 of 48 picks slower, 0.07% more training time on average, with a 1.05 margin; 10 of 48
# and 1.68% with 1.15. In the demo's searches, races of one 4 M-MAC member read 1.09-1.20x, and two finalizes had
# trained contiguous on races of 1.12x and 1.14x.
TRAIN_CHANNELS_LAST_MIN_SPEEDUP = 1.05
TRAIN_FORMAT_ROUNDS = 3
# Models whose contiguous training step is faster than this are not measured (and stay contiguous).
MEASURE_MIN_STEP_S = 0.005
CHANNELS_LAST_ENV_VAR = "HWTUNE_CHANNELS_LAST"


# --------------------------------------------------------------------------------------------
# Threads, parameter groups, schedule
# --------------------------------------------------------------------------------------------


@contextmanager
def num_threads(threads: int | None) -> Iterator[int]:
    """Run with ``threads`` torch intra-op threads, restoring the previous setting afterwards."""
    before = torch.get_num_threads()
    if threads is None:
        yield before
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"threads must be a positive integer or None, got {threads!r}")
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(before)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weights with ``weight_decay``; BatchNorm scales/shifts and biases without.

    Decaying those only fights the normalization (Goyal et al. 2017, "Accurate, large minibatch
    SGD", sec. 3).
    """
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up from 1/warmup to 1, then a cosine decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


# --------------------------------------------------------------------------------------------
# Devices and precision
# --------------------------------------------------------------------------------------------


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(spec: str | torch.device | None) -> torch.device:
    """The training device ``spec`` names: ``auto``/``None`` (CUDA, else MPS, else CPU), ``cpu``,
    ``cuda``, ``cuda:N`` or ``mps``.

    Raises:
        ConfigError: an unknown name, or a device this machine does not have (one line).
    """
    if spec is None or spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    text = str(spec).strip().lower()
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda", "mps") or (dev.type != "cuda" and dev.index not in (None, 0)):
        raise ConfigError(f"train device {spec!r}: expected auto, cpu, cuda, cuda:N or mps")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"train device {spec!r}: CUDA is not available on this machine; use cpu or auto")
        count = torch.cuda.device_count()
        index = torch.cuda.current_device() if dev.index is None else dev.index
        if index >= count:
            raise ConfigError(
                f"train device {spec!r}: this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}"
            )
        return torch.device("cuda", index)
    if dev.type == "mps" and not _mps_available():
        raise ConfigError(f"train device {spec!r}: MPS is not available (it needs macOS on Apple silicon); use cpu")
    return torch.device(dev.type)


def device_name(device: torch.device) -> str:
    """``"cpu"``, ``"mps"`` or ``"cuda:0 (NVIDIA H100 80GB HBM3)"``."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        where = f", CUDA_VISIBLE_DEVICES={visible}" if visible else ""  # a local worker's own GPU
        return f"cuda:{index} ({torch.cuda.get_device_name(index)}{where})"
    return str(device)


@dataclass(frozen=True)
class Precision:
    """The autocast dtype of a training run on ``device`` (``None``: fp32)."""

    device: torch.device
    dtype: torch.dtype | None = None
    name: str = "fp32"

    def autocast(self) -> Any:
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def scaler(self) -> Any:
        """A gradient scaler for fp16 on CUDA (bf16 and fp32 need none); ``None`` otherwise."""
        if self.dtype == torch.float16 and self.device.type == "cuda":
            return torch.amp.GradScaler("cuda")
        return None


def resolve_amp(amp: str | None, device: torch.device) -> Precision:
    """Mixed precision for ``device``: ``auto`` (bf16 on CUDA where supported, else fp16 on CUDA/MPS,
    off on the CPU), ``bf16``, ``fp16`` or ``off``.

    Raises:
        ConfigError: an unknown mode, or fp16 on the CPU.
    """
    mode = "auto" if amp is None else str(amp).lower()
    if mode not in AMP_MODES:
        raise ConfigError(f"amp {amp!r}: expected one of {', '.join(AMP_MODES)}")
    if mode == "auto":
        if device.type == "cuda":
            mode = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        elif device.type == "mps":
            mode = "fp16"
        else:
            mode = "off"
    if mode == "off":
        return Precision(device)
    if mode == "fp16" and device.type == "cpu":
        raise ConfigError("amp 'fp16' needs a CUDA or MPS train device; on the CPU use bf16 or off")
    return Precision(device, torch.bfloat16 if mode == "bf16" else torch.float16, mode)


@contextmanager
def on_device(modules: Iterable[torch.nn.Module | None], device: torch.device | None) -> Iterator[None]:
    """Move ``modules`` (in place) to ``device`` for the block, and back to where each was after it.

    ``device=None`` leaves them where they are.
    """
    mods = [m for m in modules if m is not None]
    if device is None:
        yield
        return
    homes = [_device_of(m) for m in mods]
    for m in mods:
        m.to(device)
    try:
        yield
    finally:
        for m, home in zip(mods, homes, strict=True):
            if home is not None:
                m.to(home)


def _device_of(module: torch.nn.Module) -> torch.device | None:
    for t in module.parameters():
        return t.device
    for b in module.buffers():
        return b.device
    return None


# --------------------------------------------------------------------------------------------
# Memory format
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryFormat:
    """Whether a run trains in channels-last, and why (``"measured 1.52x"``, ``"asked"``, ``"no 4-D input"``);
    ``speedup``: the ratio a race measured (contiguous over channels-last step time), None when none ran."""

    channels_last: bool = False
    reason: str = "default"
    speedup: float | None = None

    @property
    def memory_format(self) -> torch.memory_format | None:
        """The format batches are put in (``None``: as they come)."""
        return torch.channels_last if self.channels_last else None

    @property
    def name(self) -> str:
        return f"{'channels_last' if self.channels_last else 'contiguous'} ({self.reason})"

    @contextmanager
    def applied(self, *modules: torch.nn.Module | None) -> Iterator[MemoryFormat]:
        """``modules`` in this format for the block, contiguous again after it (export expects that)."""
        mods = [m for m in modules if m is not None] if self.channels_last else []
        for m in mods:
            m.to(memory_format=torch.channels_last)
        try:
            yield self
        finally:
            for m in mods:
                m.to(memory_format=torch.contiguous_format)


_FORMAT_CACHE: dict[tuple[Any, ...], MemoryFormat] = {}


def architecture_key(model: torch.nn.Module) -> tuple[Any, ...]:
    """The model's class and its parameters' shapes: what a memory-format measurement holds for."""
    return (type(model).__qualname__, tuple(tuple(p.shape) for p in model.parameters()))


def _sample_shape(dataset: Any) -> tuple[int, ...] | None:
    shape = getattr(dataset, "input_shape", None)
    if shape is None:
        try:
            shape = tuple(dataset[0][0].shape)
        except Exception:  # noqa: BLE001 - any dataset: no shape, no measurement
            return None
    return tuple(int(s) for s in shape)


def _step_seconds(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, precision: Precision) -> float:
    start = time.perf_counter()
    with precision.autocast():
        loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
    return time.perf_counter() - start


def race_formats(
    step: Callable[[torch.memory_format], float],
    *,
    rounds: int,
    min_speedup: float = CHANNELS_LAST_MIN_SPEEDUP,
    min_step_s: float | None = None,
) -> MemoryFormat:
    """Channels-last against contiguous, by ``step(format)`` (runs one timed step in that format, returns its
    seconds): ``rounds`` interleaved rounds after one that warms both formats up and is not counted;
    channels-last wins when its fastest step is ``min_speedup`` times faster than contiguous's. Contiguous
    steps shorter than ``min_step_s`` end it early: too short to gain anything. What training (:func:`choose_memory_format`) and torch scoring
    (``hwtune.runtimes.torch_eager.infer_channels_last``) both decide by."""
    times: dict[bool, list[float]] = {False: [], True: []}
    for rep in range(rounds + 1):
        for cl in (False, True):
            seconds = step(torch.channels_last if cl else torch.contiguous_format)
            if rep:
                times[cl].append(seconds)
        if rep and min_step_s is not None and min(times[False]) < min_step_s:
            return MemoryFormat(False, "step too short to gain")
    speedup = min(times[False]) / min(times[True])
    return MemoryFormat(speedup >= min_speedup, f"measured {speedup:.2f}x", speedup)


def measure_memory_format(
    model: torch.nn.Module, shape: tuple[int, ...], device: torch.device, precision: Precision, batch: int
) -> MemoryFormat:
    """Channels-last or contiguous for training ``model`` on ``batch`` random images of ``shape``, measured now (no
    cache): :func:`race_formats` of ``TRAIN_FORMAT_ROUNDS`` training steps of a copy of ``model`` in each format,
    channels-last by ``TRAIN_CHANNELS_LAST_MIN_SPEEDUP`` or more. What :func:`choose_memory_format` caches;
    ``benchmarks/bench_memory_format.py`` checks it against epochs timed in each format."""
    probe = copy.deepcopy(model).to(device).train()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((batch, *shape), generator=gen).to(device)
    with torch.no_grad():
        out = probe(x[:2])
    y = torch.randint(0, int(out.shape[-1]), (batch,), generator=gen).to(device)

    def step(fmt: torch.memory_format) -> float:
        probe.to(memory_format=fmt)
        seconds = _step_seconds(probe, x.contiguous(memory_format=fmt), y, precision)
        probe.zero_grad(set_to_none=True)
        return seconds

    return race_formats(
        step, rounds=TRAIN_FORMAT_ROUNDS, min_speedup=TRAIN_CHANNELS_LAST_MIN_SPEEDUP, min_step_s=MEASURE_MIN_STEP_S
    )


def pinned_memory_format() -> MemoryFormat | None:
    """The format ``$HWTUNE_CHANNELS_LAST`` (``1`` / ``0``) pins, for training and scoring alike; else None."""
    env = os.environ.get(CHANNELS_LAST_ENV_VAR, "").strip()
    return MemoryFormat(env == "1", f"{CHANNELS_LAST_ENV_VAR}={env}") if env in ("0", "1") else None


def choose_memory_format(
    model: torch.nn.Module,
    dataset: Any,
    device: torch.device,
    precision: Precision | None = None,
    batch_size: int = 128,
    channels_last: bool | None = None,
) -> MemoryFormat:
    """Channels-last or contiguous for training ``model`` on ``dataset``'s images on ``device``.

    ``channels_last`` (or ``$HWTUNE_CHANNELS_LAST`` = 1/0) decides when given; otherwise a model
    without 4-D input or 4-D weights stays contiguous, and the rest is measured once per process and
    (device, precision, :func:`architecture_key`, input shape, batch size) by :func:`measure_memory_format`; any error
    while measuring falls back to contiguous.
    """
    if channels_last is not None:
        return MemoryFormat(bool(channels_last), "asked")
    pinned = pinned_memory_format()
    if pinned is not None:
        return pinned
    shape = _sample_shape(dataset)
    if shape is None or len(shape) != 3 or not any(p.ndim == 4 for p in model.parameters()):
        return MemoryFormat(False, "no 4-D images")
    precision = precision or Precision(device)
    key = (str(device), precision.name, architecture_key(model), shape, int(batch_size))
    if key not in _FORMAT_CACHE:
        try:
            with torch.random.fork_rng(devices=[]):
                _FORMAT_CACHE[key] = measure_memory_format(model, shape, device, precision, int(batch_size))
        except Exception as exc:  # noqa: BLE001 - a failed measurement must not fail the training
            _FORMAT_CACHE[key] = MemoryFormat(False, f"measurement failed: {type(exc).__name__}")
    return _FORMAT_CACHE[key]


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------

Objective = Callable[[torch.Tensor, torch.Tensor, Callable[[torch.Tensor], None]], float]


@dataclass
class LoopResult:
    """Losses of the steps done, images seen and wall-clock seconds."""

    losses: list[float] = field(default_factory=list)
    seen: int = 0
    seconds: float = 0.0


def _diverged(desc: str, step: int, steps: int, loss: float, lr: float, what: str | None = None, value: float = 0.0):
    detail = f"loss {loss:.4g}" if what is None else f"loss {loss:.4g}, {what} {value:.4g}"
    err = TrainingDivergedError(
        f"{desc} diverged at step {step + 1}/{steps}: {detail} (lr {lr:.3g}); "
        "lower lr= or check the input normalization"
    )
    err.step = step + 1  # type: ignore[attr-defined]
    err.loss = loss  # type: ignore[attr-defined]
    return err


def _check_batch(x: Any, step: int) -> None:
    if not torch.is_tensor(x) or not x.is_floating_point():
        raise ModelError(
            f"training batch {step}: images must be a float tensor, got {type(x).__name__} "
            f"{getattr(x, 'dtype', '')}; see hwtune.data.from_datasets for the expected items"
        )


def run_loop(
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    objective: Objective,
    opt: torch.optim.Optimizer,
    lr_at: Callable[[int], float],
    *,
    steps: int,
    device: torch.device,
    precision: Precision | None = None,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    memory_format: torch.memory_format | None = None,
    max_grad_norm: float | None = None,
    check_grad: bool = False,
    time_limit_s: float | None = None,
    progress: bool = False,
    desc: str = "training",
) -> LoopResult:
    """Run ``steps`` optimizer steps over ``batches``.

    Each step: the batch goes to ``device`` (non-blocking), through ``augment``, into
    ``memory_format`` (:class:`MemoryFormat`; the model must be in it already); the learning rate
    of every parameter group becomes ``lr_at(step)``; the gradients are zeroed; ``objective(x, y,
    backward)`` computes its loss(es) under autocast and calls ``backward`` on each (which checks
    the loss first: NaN/inf or above 1e4 is a :class:`TrainingDivergedError`), returning the loss to
    report; the gradient norm is clipped to ``max_grad_norm`` and/or checked finite
    (``check_grad``); the optimizer steps. The time limit is checked before every step but the
    first (so a run always has at least one).
    """
    precision = precision or Precision(device)
    scaler = precision.scaler()
    params = [p for g in opt.param_groups for p in g["params"]]
    result = LoopResult()
    bar = _progress_bar(steps, progress, desc)
    start = time.perf_counter()
    step, lr = 0, 0.0

    def backward(loss: torch.Tensor) -> None:
        value = float(loss.detach())
        if not math.isfinite(value) or value > DIVERGENCE_LOSS:
            raise _diverged(desc, step, steps, value, lr)
        (scaler.scale(loss) if scaler is not None else loss).backward()

    try:
        for step, (x, y) in enumerate(batches):
            if step >= steps:
                break
            if step > 0 and time_limit_s is not None and time.perf_counter() - start >= time_limit_s:
                break
            _check_batch(x, step)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if augment is not None:
                x = augment(x)
            if memory_format is not None:
                x = x.contiguous(memory_format=memory_format)
            lr = lr_at(step)
            for g in opt.param_groups:
                g["lr"] = lr
            opt.zero_grad(set_to_none=True)
            with precision.autocast():
                value = objective(x, y, backward)
            if not math.isfinite(value) or value > DIVERGENCE_LOSS:
                raise _diverged(desc, step, steps, value, lr)
            if max_grad_norm is not None or (check_grad and scaler is None):
                if scaler is not None:
                    scaler.unscale_(opt)
                grads = [p.grad for p in params if p.grad is not None]
                if max_grad_norm is not None:
                    norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
                else:
                    norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())
                if scaler is None and not torch.isfinite(norm):
                    raise _diverged(desc, step, steps, value, lr, "gradient norm", float(norm))
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            result.losses.append(value)
            result.seen += len(y)
            bar.update(1)
            if step % 20 == 0:
                bar.set_postfix(loss=f"{value:.3f}", refresh=False)
    finally:
        bar.close()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    result.seconds = time.perf_counter() - start
    return result


def _progress_bar(total: int, enabled: bool, desc: str) -> Any:
    from hwtune.progress import progress_bar

    return progress_bar(total, desc=desc, unit="batch", enabled=enabled, leave=True)
