"""The user's normalization applied to the data their model was trained with (``hwtune.compress normalize=``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from hwtune._util import is_num
from hwtune.errors import ConfigError, DataError

if TYPE_CHECKING:  # pragma: no cover
    from hwtune.data import DataSplits

__all__ = ["with_normalization"]


def with_normalization(splits: DataSplits, mean: Sequence[float], std: Sequence[float]) -> DataSplits:
    """The same splits normalized with the user's per-channel ``mean``/``std`` (what their weights expect)."""
    from hwtune.data import TensorData

    c = splits.input_shape[0]
    mean, std = [float(x) for x in mean], [float(x) for x in std]
    problems = []
    for key, v in (("mean", mean), ("std", std)):
        if len(v) not in (1, c) or not all(is_num(x) for x in v):
            problems.append(f"normalize: {key} must be 1 or {c} finite numbers (one per channel), got {v}")
    if any(s <= 0 for s in std):
        problems.append(f"normalize: std must be > 0, got {std}")
    if problems:
        raise ConfigError("\n".join(problems))
    mean, std = (mean * c)[:c], (std * c)[:c]

    def norm(ds: Any) -> Any:
        if ds is None:
            return None
        if not isinstance(ds, TensorData) or ds.images.is_floating_point():
            raise DataError("normalize= applies to image datasets hwtune loaded (uint8 pixels), not to float tensors")
        return TensorData(ds.images, ds.labels, mean=mean, std=std)

    return dataclasses.replace(
        splits, train=norm(splits.train), val=norm(splits.val), test=norm(splits.test), mean=tuple(mean), std=tuple(std)
    )
