"""Label-preserving augmentations of image batches, applied on the fly during long training runs.

A search trains each candidate for a fraction of an epoch to a few epochs, where augmentation only
slows learning down; finalize trains the chosen few for many epochs, where it is what keeps a small
network from over-fitting. The recipe names the augmentation its data tolerates (``[train] augment``):
a horizontal flip keeps the label of a shirt but not of a digit, so nothing is applied unless asked.

Registered augmentations (:data:`AUGMENTATIONS`):

* ``"none"``: the batch as it is.
* ``"shift"``: every image moved by a random whole number of pixels, up to ``MAX_SHIFT_PX`` in each
  direction (edge pixels repeated into the gap: the background of centred objects).
* ``"shift-flip"``: ``"shift"``, then a horizontal flip of a random half of the images.

Everything runs on whole batches with tensor indexing (no per-image Python loop) and draws from a
``torch.Generator`` the caller seeds, so a run is reproducible.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from hwtune.errors import ConfigError, did_you_mean

__all__ = ["AUGMENTATIONS", "MAX_SHIFT_PX", "augmenter", "random_hflip", "random_shift"]

# Largest translation in pixels: 2 of 28 px keeps a Fashion-MNIST item whole.
MAX_SHIFT_PX = 2


def random_shift(x: torch.Tensor, max_shift_px: int, gen: torch.Generator) -> torch.Tensor:
    """Each image of the NCHW batch ``x`` translated by its own random (dy, dx) in [-max, max] pixels."""
    if max_shift_px <= 0:
        return x
    n, c, h, w = x.shape
    m = int(max_shift_px)
    padded = F.pad(x, (m, m, m, m), mode="replicate")
    dy = torch.randint(0, 2 * m + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * m + 1, (n,), generator=gen)
    rows = dy[:, None] + torch.arange(h)[None, :]
    cols = dx[:, None] + torch.arange(w)[None, :]
    return padded[
        torch.arange(n)[:, None, None, None],
        torch.arange(c)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]


def random_hflip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A random half (each image with probability 1/2) of the NCHW batch mirrored left-right."""
    flip = torch.rand(x.shape[0], generator=gen) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def _none(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return x


def _shift(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return random_shift(x, MAX_SHIFT_PX, gen)


def _shift_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return random_hflip(random_shift(x, MAX_SHIFT_PX, gen), gen)


AUGMENTATIONS: dict[str, Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = {
    "none": _none,
    "shift": _shift,
    "shift-flip": _shift_flip,
}


def augmenter(name: str | None, seed: int) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The augmentation ``name`` as a function of a batch, drawing from its own generator seeded with ``seed``.

    Returns None for ``None`` / ``"none"`` (nothing to apply). Only 4-D (NCHW) float batches are
    augmented; anything else passes through unchanged.

    Raises:
        ConfigError: an unknown name.
    """
    if name is None or name == "none":
        return None
    fn = AUGMENTATIONS.get(name)
    if fn is None:
        raise ConfigError(
            f"unknown augmentation {name!r}; expected one of {', '.join(AUGMENTATIONS)}{did_you_mean(name, AUGMENTATIONS)}"
        )
    gen = torch.Generator().manual_seed(int(seed))

    def apply(x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or not x.is_floating_point():
            return x
        return fn(x, gen)

    return apply
