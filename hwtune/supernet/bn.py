"""BatchNorm recalibration: a sub-network's own activation statistics.

Slicing a parent keeps its BatchNorm running statistics, but those describe the parent's
activations: a sub-network with fewer channels or blocks feeds its layers differently, and its
accuracy with the parent's statistics is often near chance. Re-estimating them on a few thousand
training images restores it (Once-for-All, Cai et al. 2020, sec. 3.3; BigNAS, Yu et al. 2020).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from hwtune.engine import on_device, resolve_amp, resolve_device
from hwtune.errors import ConfigError
from hwtune.supernet._loop import batch_fetcher, num_threads, train_split

__all__ = ["recalibrate_bn"]

_BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _batches(data: Any, n_images: int, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
    """Images only, ``n_images`` in all (fewer if the data has fewer), a seeded random subset."""
    if isinstance(data, torch.Tensor):
        yield from data[:n_images].split(batch_size)
        return
    if isinstance(data, torch.utils.data.DataLoader):
        seen = 0
        for batch in data:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            x = x[: n_images - seen]
            seen += len(x)
            yield x
            if seen >= n_images:
                return
        return
    ds = train_split(data)
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(ds), generator=gen)[:n_images]
    fetch = batch_fetcher(ds)
    for b in idx.split(batch_size):
        yield fetch(b)[0]


def recalibrate_bn(
    model: nn.Module,
    data: Any,
    *,
    n_images: int = 2000,
    batch_size: int = 250,
    seed: int = 0,
    threads: int | None = None,
    train_device: str | torch.device | None = None,
    amp: str | None = "off",
) -> nn.Module:
    """Reset every BatchNorm's running statistics and re-estimate them on training images.

    The estimate is the plain average over the batches (``momentum=None``), not an exponential
    one, so the order of the batches does not matter. Batches of one image are skipped (their
    variance is undefined). Runs without gradients, with only the BatchNorm layers in training
    mode (dropout off); the model's mode and each layer's momentum are restored.

    Args:
        model: The model to recalibrate, in place.
        data: A ``DataSplits`` (its training split), a Dataset, a DataLoader yielding
            ``(images, labels)``, or a tensor of images.
        n_images: Images to use (a seeded random subset of a dataset).
        batch_size: Images per forward pass; with the average over batches, larger batches give
            statistics closer to the whole-set ones.
        seed: Seed of the subset.
        threads: Torch threads for this call (restored afterwards).
        train_device: Run the forward passes on this device (``auto``, ``cpu``, ``cuda``,
            ``cuda:N``, ``mps``); the model moves there and back. Default: where it is.
        amp: Mixed precision of the forward passes, as training's ``amp`` (``auto``, ``bf16``, ``fp16``,
            ``off``, the default): a search recalibrates like it trains. The statistics themselves are
            accumulated in fp32. The passes run in channels-last where scoring measured it faster.

    Returns:
        ``model``.

    Raises:
        ConfigError: ``n_images`` or ``batch_size`` is not a positive integer.
    """
    for key, value in (("n_images", n_images), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{key} must be a positive integer, got {value!r}")
    bns = [m for m in model.modules() if isinstance(m, _BN_TYPES) and m.track_running_stats]
    if not bns:
        return model
    device = resolve_device(train_device) if train_device is not None else next(model.parameters()).device
    precision = resolve_amp(amp, device)
    momenta = [m.momentum for m in bns]
    was_training = model.training
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    # Only BatchNorm in training mode: a dropout layer before a BatchNorm would skew its statistics.
    model.eval()
    for m in bns:
        m.train()
    try:
        with num_threads(threads), on_device([model], device):
            fmt = None
            for x in _batches(data, n_images, batch_size, seed):
                if len(x) <= 1:
                    continue
                x = x.to(device)
                if fmt is None:
                    fmt = _memory_format(model, x)
                    with torch.no_grad():
                        model.to(memory_format=fmt)
                with torch.no_grad(), precision.autocast():
                    model(x.contiguous(memory_format=fmt))
    finally:
        with torch.no_grad():
            model.to(memory_format=torch.contiguous_format)
        for m, momentum in zip(bns, momenta, strict=True):
            m.momentum = momentum
        model.train(was_training)
    return model


def _memory_format(model: nn.Module, x: torch.Tensor) -> torch.memory_format:
    """Channels-last where forward passes of this architecture on such batches measured faster (or are pinned)."""
    from hwtune.runtimes.torch_eager import infer_channels_last

    return torch.channels_last if infer_channels_last(model, x) else torch.contiguous_format
