"""hwtune.datasplits: DataSplits.val_in_train (what ``finalize --train-on train+val`` trains on)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import ConcatDataset, TensorDataset

from hwtune.datasplits import DataSplits, TensorData, iter_batches, loader_workers
from hwtune.errors import DataError


def _splits(train, val) -> DataSplits:
    return DataSplits("toy", train, val, None, (1, 4, 4), 2, ("a", "b"), (0.5,), (0.25,))


def _uint8(n: int, label: int) -> TensorData:
    images = torch.full((n, 1, 4, 4), label * 100, dtype=torch.uint8)
    return TensorData(images, torch.full((n,), label), mean=(0.5,), std=(0.25,))


def test_in_memory_splits_stay_in_memory_with_the_validation_images_appended():
    splits = _splits(_uint8(6, 0), _uint8(3, 1))
    both = splits.val_in_train()
    assert isinstance(both.train, TensorData) and len(both.train) == 9 and both.val is splits.val
    assert both.train.labels.tolist() == [0] * 6 + [1] * 3
    x, _ = both.train.batch(slice(6, 9))
    assert torch.equal(x, splits.val.batch(slice(0, 3))[0])  # normalized the same way
    assert len(splits.train) == 6  # the original is unchanged


def test_other_datasets_are_concatenated_and_stream_through_a_loader():
    train = TensorDataset(torch.zeros(5, 1, 4, 4), torch.zeros(5, dtype=torch.long))
    val = TensorDataset(torch.ones(2, 1, 4, 4), torch.ones(2, dtype=torch.long))
    both = _splits(train, val).val_in_train()
    assert isinstance(both.train, ConcatDataset) and len(both.train) == 7
    labels = torch.cat([y for _, y in iter_batches(both.train, [torch.arange(7)])])
    assert sorted(labels.tolist()) == [0] * 5 + [1] * 2
    train.num_workers = 3  # type: ignore[attr-defined]  # a streamed folder asks for its workers
    assert loader_workers(both.train) == 3


@pytest.mark.parametrize("val", [None, "empty"])
def test_no_validation_split_is_one_line(val):
    empty = _uint8(0, 0) if val == "empty" else None
    with pytest.raises(DataError, match="dataset 'toy' has no validation split to train on"):
        _splits(_uint8(4, 0), empty).val_in_train()


def test_differently_normalized_tensors_are_not_merged_as_raw_pixels():
    val = _uint8(2, 1)
    val = TensorData(val.images, val.labels, mean=(0.1,), std=(0.2,))
    both = _splits(_uint8(2, 0), val).val_in_train()
    assert isinstance(both.train, ConcatDataset)
