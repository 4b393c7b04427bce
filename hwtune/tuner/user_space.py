"""A user's trained model seen as a search space (``UserModelSpace``), and the user's normalization of
the data it was trained with (``with_normalization``).

Kept apart from :mod:`hwtune.tuner.compress` (which runs a compression study through ``tune``) so that
the modules below ``tune`` -- reading a study's stored space and data -- need not import it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from hwtune._util import is_num
from hwtune.errors import ConfigError, DataError

if TYPE_CHECKING:  # pragma: no cover
    from hwtune.compression import CompressCandidate, CompressSpace
    from hwtune.data import DataSplits

__all__ = ["FAMILY", "UserModelSpace", "with_normalization"]

FAMILY = "user-model"


@dataclasses.dataclass(frozen=True)
class _Input:
    channels: int
    size: int


@dataclasses.dataclass(frozen=True)
class _Train:
    epochs: float
    batch_size: int


class UserModelSpace:
    """A :class:`~hwtune.compression.CompressSpace` seen through the tuner's space interface."""

    family = FAMILY
    parent = None

    def __init__(
        self, cspace: CompressSpace, *, name: str, dataset: str, epochs: float = 1.0, batch_size: int = 128
    ) -> None:
        c, h, w = cspace.input_shape
        if h != w:
            raise ConfigError(f"compress: only square inputs are supported, got {c}x{h}x{w}")
        self.cspace = cspace
        self.name = name
        self.dataset = dataset
        self.input = _Input(int(c), int(h))
        self.num_classes = int(cspace.num_classes)
        self.train = _Train(float(epochs), int(batch_size))
        self.path = None

    # -- the tuner's view ----------------------------------------------------------------------
    @property
    def precision_choices(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for st in self.cspace.stages:
            seen.update(dict.fromkeys(st.precision))
        return tuple(seen)

    @property
    def knob_choices(self) -> dict[str, tuple[Any, ...]]:
        return {k: v for k, v in self.cspace.all_params().items() if not k.endswith(".precision")}

    def param_choices(self) -> dict[str, tuple[Any, ...]]:
        return self.cspace.param_choices()

    def size(self) -> int:
        return self.cspace.size()

    def candidate(self, params: Mapping[str, Any]) -> CompressCandidate:
        """A candidate; a uniform ``precision`` key sets every stage that offers it."""
        params = dict(params)
        uniform = params.pop("precision", None)
        if uniform is not None:
            for st in self.cspace.stages:
                if uniform in st.precision and len(st.precision) > 1:
                    params[f"{st.name}.precision"] = uniform
                elif uniform not in st.precision:
                    raise ConfigError(f"compress: stage {st.name} cannot run {uniform} ({', '.join(st.precision)})")
        return self.cspace.candidate(params)

    def candidate_from_dict(self, data: Mapping[str, Any]) -> CompressCandidate:
        from hwtune.compression import CompressCandidate

        return CompressCandidate.from_dict(data)

    def precision_plan(self, cand: CompressCandidate) -> Any:
        from hwtune.compression import precision_plan

        return precision_plan(self.cspace, cand)

    def initial_params(self) -> list[dict[str, Any]]:
        """Parameters of the trials enqueued first: the unmodified model (the baseline row), then uniform
        pruning at each width every prunable stage offers (int8 where every stage offers it, full depth).

        Uniform pruning is what a user tries by hand, and it is strong: measured on a converged residual
        model (``benchmarks/bench_compress.py``), Torch-Pruning's uniform twin lost 0.03 point at 2x fewer
        MACs where a short search that never tried it lost 1.43. Seeding the search with it means the
        front is never worse than the hand-made baseline.
        """
        cs = self.cspace
        searched = self.param_choices()
        prunable = [st for st in cs.stages if st.groups and len(st.width) > 1]
        widths = set.intersection(*(set(st.width) for st in prunable)) if prunable else set()
        prec = "int8" if all("int8" in st.precision for st in cs.stages) else None
        out: list[dict[str, Any]] = []
        for cand in [cs.baseline(), *(cs.uniform(w, precision=prec) for w in sorted(widths - {1.0}, reverse=True))]:
            params = {k: v for k, v in cand.params().items() if k in searched}
            if all(v in searched[k] for k, v in params.items()) and params not in out:
                out.append(params)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "compress",
            "name": self.name,
            "dataset": self.dataset,
            "train": {"epochs": self.train.epochs, "batch_size": self.train.batch_size},
            "space": self.cspace.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UserModelSpace:
        from hwtune.compression import CompressSpace

        train = data.get("train") or {}
        return cls(
            CompressSpace.from_dict(data["space"]),
            name=str(data.get("name", "compress")),
            dataset=str(data.get("dataset", "user")),
            epochs=float(train.get("epochs", 1.0)),
            batch_size=int(train.get("batch_size", 128)),
        )



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
