"""Fixtures of the tests of models/ (the recipes and the reference models users start from)."""

from __future__ import annotations

from pathlib import Path

import pytest


def _rgb_folder(root: Path, per_class: dict[str, int], seed: int) -> Path:
    """10 classes of 32x32 RGB PNGs: class c is a bright patch of colour c % 3 at grid cell c, plus noise."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in per_class.items():
        for c in range(10):
            d = root / split / f"c{c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = rng.integers(0, 60, size=(32, 32, 3), dtype=np.uint8)
                r, q = divmod(c, 4)
                img[r * 8 + 2 : r * 8 + 10, q * 8 : q * 8 + 8, c % 3] = 230
                Image.fromarray(img, mode="RGB").save(d / f"{i}.png")
    return root


@pytest.fixture
def rgb_folder():
    """``rgb_folder(root, {"train": n, "test": m}, seed)``: a tiny generated ImageFolder of 32x32 RGB images."""
    return _rgb_folder
