"""Label-preserving augmentations of image batches (torchvision.transforms.v2), applied during long training runs.

A search trains each candidate for a fraction of an epoch to a few epochs, where augmentation only
slows learning down; finalize trains the chosen few for many epochs, where it is what keeps a small
network from over-fitting. The caller names the augmentation its data tolerates (``finalize --augment``):
a horizontal flip keeps the label of a shirt but not of a digit, so nothing is applied unless asked.

An augmentation is a comma-separated list (or a list) of steps, applied in order:

* ``crop:P``: pad every side by ``P`` pixels (zeros) and crop back to the original size at a random
  place (``v2.RandomCrop(padding=P)``; ``crop:4,hflip`` is the standard CIFAR pipeline);
* ``hflip``: a horizontal flip of each image with probability 1/2;
* ``erasing:P``: with probability ``P``, a random rectangle set to 0 (``v2.RandomErasing``, Zhong et al. 2020);
* ``none``: nothing.

Aliases kept for old studies and the README: ``shift`` moves every image by a random whole number of
pixels up to ``MAX_SHIFT_PX`` with the edge pixels repeated into the gap (the background of centred
objects), ``shift-flip`` is ``shift,hflip``. ``shift`` and ``hflip`` keep their batched implementation
(one gather / one ``where`` for the whole batch: :func:`random_shift`, :func:`random_hflip`): v2 has no
per-image random parameters on a batch, and its per-image edge padding measured about 20 ms per 28x28
image on this 2-core host (about 3 s per batch of 128, against milliseconds for the gather), so old
studies also reproduce exactly.

Every image of a batch draws its own parameters (a v2 transform called on a whole batch would move
every image the same way, so the v2 steps run per image: 0.3-0.6 ms per image for ``crop:4,hflip``
on this host, loaded; ``shift`` measured in the same range there), on the batch's device, from a generator the caller seeds: a run is
reproducible and does not disturb the model's random stream.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from hwtune.errors import ConfigError, did_you_mean

__all__ = [
    "AUGMENTATIONS",
    "MAX_SHIFT_PX",
    "augmenter",
    "parse_augment",
    "random_hflip",
    "random_shift",
    "recipe_augment",
]

# Largest translation of the ``shift`` alias in pixels: 2 of 28 px keeps a Fashion-MNIST item whole.
MAX_SHIFT_PX = 2
# Step names (``crop`` and ``erasing`` take a number after a colon) and the aliases they expand to.
STEPS = ("none", "crop", "hflip", "erasing", "shift")
ALIASES = {"shift-flip": ("shift", "hflip")}
#: Every name ``augmenter`` takes on its own (steps with their usual argument, and the aliases).
AUGMENTATIONS = ("none", "crop:4", "hflip", "erasing:0.25", "shift", "shift-flip")


def _transform(step: str, where: str) -> Any:
    """The v2 transform of a ``crop:P`` / ``erasing:P`` step; ``None`` for the batched steps."""
    name, _, arg = step.partition(":")
    if name in ("none", "shift", "hflip") and not arg:
        return None
    try:
        value = float(arg)
    except ValueError:
        value = float("nan")
    from torchvision.transforms import v2

    if name == "crop" and 1 <= value <= 64 and value == int(value):
        return v2.RandomCrop(1, padding=int(value))  # the size is set to each batch's own
    if name == "erasing" and 0 < value <= 1:
        return v2.RandomErasing(p=value, value=0)
    if name in ("crop", "erasing"):
        expected = "crop:P with a whole number of pixels 1..64" if name == "crop" else "erasing:P with 0 < P <= 1"
        raise ConfigError(f"{where}: augmentation step {step!r}: expected {expected}")
    prefix = "" if where == "augment" else f"{where}: "
    raise ConfigError(
        f"{prefix}unknown augmentation {step!r}; expected steps of {', '.join(AUGMENTATIONS)} (e.g. 'crop:4,hflip')"
        f"{did_you_mean(name, (*STEPS, *ALIASES))}"
    )


def parse_augment(spec: str | Sequence[str] | None, where: str = "augment") -> list[str]:
    """The steps of ``spec`` (``"crop:4,hflip"``, ``["crop:4", "hflip"]``, an alias), each checked.

    Raises:
        ConfigError: an unknown step or an argument out of range (one line, naming it).
    """
    if spec is None:
        return []
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    steps: list[str] = []
    for item in items:
        text = str(item).strip().lower()
        for step in ALIASES.get(text, (text,)):
            if step:
                _transform(step, where)
                steps.append(step)
    return [s for s in steps if s != "none"]


def recipe_augment(value: Any, where: str) -> tuple[str, ...]:
    """A recipe's ``[train] augment`` (a list of steps, or one comma-separated string), checked.

    Raises:
        ConfigError: not a list of strings, or a bad step (one line, prefixed with ``where``).
    """
    if value is None:
        return ()
    if not isinstance(value, (str, list)) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f'{where} must be a list of strings like ["crop:4", "hflip"], got {value!r}')
    return tuple(parse_augment(value, where=where))


def augmenter(spec: str | Sequence[str] | None, seed: int) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The augmentation ``spec`` as a function of an NCHW batch, drawing from its own generator seeded with ``seed``.

    Returns None when there is nothing to apply (``None``, ``"none"``). Only 4-D float batches are
    augmented; anything else passes through unchanged.

    Raises:
        ConfigError: an unknown step or a bad argument.
    """
    steps = parse_augment(spec)
    if not steps:
        return None
    gen = torch.Generator().manual_seed(int(seed))
    stages = [(step, _transform(step, "augment")) for step in steps]

    def apply(x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or not x.is_floating_point():
            return x
        for step, t in stages:
            if step == "shift":
                x = random_shift(x, MAX_SHIFT_PX, gen)
            elif step == "hflip":
                x = random_hflip(x, gen)
            else:
                x = _per_image(t, x, gen)
        return x

    return apply


def random_shift(x: torch.Tensor, max_shift_px: int, gen: torch.Generator) -> torch.Tensor:
    """Each image of the NCHW batch ``x`` translated by its own random (dy, dx) in [-max, max] pixels,
    edge pixels repeated into the gap (one gather for the whole batch, on its device)."""
    if max_shift_px <= 0:
        return x
    n, c, h, w = x.shape
    m = int(max_shift_px)
    padded = F.pad(x, (m, m, m, m), mode="replicate")
    dy = torch.randint(0, 2 * m + 1, (n,), generator=gen).to(x.device)
    dx = torch.randint(0, 2 * m + 1, (n,), generator=gen).to(x.device)
    ar = functools.partial(torch.arange, device=x.device)
    rows = dy[:, None] + ar(h)[None, :]
    cols = dx[:, None] + ar(w)[None, :]
    return padded[
        ar(n)[:, None, None, None], ar(c)[None, :, None, None], rows[:, None, :, None], cols[:, None, None, :]
    ]


def random_hflip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A random half (each image with probability 1/2) of the NCHW batch mirrored left-right."""
    flip = (torch.rand(x.shape[0], generator=gen) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def _per_image(t: Any, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """The v2 transform ``t`` on each image of ``x`` with its own parameters, seeded from ``gen``."""
    from torchvision.transforms import v2

    if isinstance(t, v2.RandomCrop):
        t.size = (int(x.shape[-2]), int(x.shape[-1]))  # crop back to the batch's own size
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=gen)))
        return torch.stack([t(img) for img in x])
