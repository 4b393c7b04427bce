"""hwtune/normalization.py: the user's per-channel normalization applied to loaded splits."""

from __future__ import annotations

import pytest
import torch

from hwtune.data import DataSplits, TensorData
from hwtune.errors import ConfigError, DataError
from hwtune.normalization import with_normalization


def _splits(images: torch.Tensor) -> DataSplits:
    labels = torch.zeros(len(images), dtype=torch.long)
    ds = TensorData(images, labels)
    return DataSplits(name="t", train=ds, val=None, test=ds, input_shape=tuple(images.shape[1:]), num_classes=2,
                      class_names=("a", "b"), mean=None, std=None)


def test_mean_and_std_apply_per_channel_and_are_recorded():
    images = torch.full((4, 3, 2, 2), 255, dtype=torch.uint8)
    out = with_normalization(_splits(images), [0.5], [0.25, 0.5, 1.0])
    assert out.mean == (0.5, 0.5, 0.5) and out.std == (0.25, 0.5, 1.0) and out.val is None
    x, _ = out.train[0]
    assert torch.allclose(x[:, 0, 0], torch.tensor([2.0, 1.0, 0.5]))
    assert out.test is not None and torch.allclose(out.test[0][0], x)


def test_bad_values_are_every_problem_at_once():
    with pytest.raises(ConfigError) as exc:
        with_normalization(_splits(torch.zeros((2, 3, 2, 2), dtype=torch.uint8)), [0.1, 0.2], [0.0])
    lines = str(exc.value).splitlines()
    assert len(lines) == 2 and "mean must be 1 or 3" in lines[0] and "std must be > 0" in lines[1]


def test_float_images_are_refused():
    with pytest.raises(DataError, match="uint8 pixels"):
        with_normalization(_splits(torch.zeros((2, 1, 2, 2))), [0.5], [0.5])
