"""Fixtures of the tests of models/ (the recipes and the reference models users start from)."""

from __future__ import annotations

import functools

import pytest
from support import write_patch_folder


@pytest.fixture
def rgb_folder():
    """``rgb_folder(root, {"train": n, "test": m}, seed)``: a tiny generated ImageFolder of 32x32 RGB images."""
    return functools.partial(write_patch_folder, size=32, channels=3)
