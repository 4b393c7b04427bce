"""A user's trained model seen as a search space: :class:`UserModelSpace`, the tuner's view of a
:class:`~hwtune.compression.CompressSpace` (``hwtune.compress``).

It plays the role :class:`hwtune.space.SearchSpace` plays for a recipe (:class:`hwtune.space.SpaceLike`),
and registers the stored kind ``compress`` so a study's stored space is rebuilt by
:func:`hwtune.space.space_from_dict`. No torch here (pruning is :mod:`hwtune.compression.prune`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwtune.compression.compress_space import CompressCandidate, CompressSpace
from hwtune.errors import ConfigError
from hwtune.space import InputSpec, ParentSpec, TrainSpec, register_space_kind

if TYPE_CHECKING:  # pragma: no cover
    from hwtune.precision import PrecisionPlan

__all__ = ["FAMILY", "KIND", "UserModelSpace"]

FAMILY = "user-model"
KIND = "compress"  # written to studies since 0.1: stays readable


class UserModelSpace:
    """A :class:`~hwtune.compression.CompressSpace` seen through the tuner's space interface
    (:class:`hwtune.space.SpaceLike`); stored as kind ``compress``."""

    family = FAMILY
    parent: ParentSpec | None = None
    path: Path | None = None

    def __init__(
        self, cspace: CompressSpace, *, name: str, dataset: str, epochs: float = 1.0, batch_size: int = 128
    ) -> None:
        c, h, w = cspace.input_shape
        if h != w:
            raise ConfigError(f"compress: only square inputs are supported, got {c}x{h}x{w}")
        self.cspace = cspace
        self.name = name
        self.dataset = dataset
        self.input = InputSpec(int(c), int(h))
        self.num_classes = int(cspace.num_classes)
        self.train = TrainSpec(float(epochs), int(batch_size))

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
        return CompressCandidate.from_dict(data)

    def precision_plan(self, cand: CompressCandidate) -> PrecisionPlan:
        from hwtune.compression.prune import precision_plan  # torch: imported when a plan is needed

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
            "kind": KIND,
            "name": self.name,
            "dataset": self.dataset,
            "train": {"epochs": self.train.epochs, "batch_size": self.train.batch_size},
            "space": self.cspace.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UserModelSpace:
        """Rebuild a stored space (``to_dict``; what a compression study stores as its recipe's ``space``)."""
        train = data.get("train") or {}
        return cls(
            CompressSpace.from_dict(data["space"]),
            name=str(data.get("name", "compress")),
            dataset=str(data.get("dataset", "user")),
            epochs=float(train.get("epochs", 1.0)),
            batch_size=int(train.get("batch_size", 128)),
        )


register_space_kind(KIND, UserModelSpace.from_dict)
