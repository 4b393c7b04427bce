"""The candidate pipeline: build -> plan precision -> train -> ship to the runtime -> measure -> evaluate.

One object per (space, device) that the tuner, the reference-point and feasibility checks and
export all use, so what export rebuilds is exactly what the search scored. Tests (and users who
want another trainer) subclass it and override a step instead of patching private functions::

    class QuickPipeline(CandidatePipeline):
        def train(self, model, data, **kw):
            ...

    hwtune.tune("fashion-convnet", pipeline=QuickPipeline)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from hwtune._util import jsonable
from hwtune.tuner.inputs import input_spec

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

    from hwtune.data import DataSplits
    from hwtune.device import DeviceProfile
    from hwtune.precision import PrecisionPlan
    from hwtune.runtimes import Runtime, ShippedModel
    from hwtune.space import Candidate, CandidateLike, SpaceLike

__all__ = ["CandidatePipeline", "DistilledPipeline", "converts_once", "ship_runtime_name"]

_FALLBACK_RUNTIME = "onnxruntime"


def ship_runtime_name(device: DeviceProfile, override: str | None = None) -> str:
    """The runtime a candidate is shipped to and scored on for ``device``.

    ``override`` (``--runtime``) wins; otherwise the profile's runtime when it is registered and
    installed here, else ONNX Runtime (the core install), so a device whose runtime is missing still
    gets a deployable file and an honest accuracy.
    """
    from hwtune.runtimes import get_runtime, list_runtimes

    if override:
        get_runtime(override).require()
        return override
    name = device.runtime
    if name in list_runtimes() and name != "torch" and get_runtime(name).available():
        return name
    return _FALLBACK_RUNTIME


def _recipe(cand: CandidateLike) -> Candidate:
    """A candidate of a recipe space, which is what this class builds; a derived space (``hwtune.compress``)
    comes with its own pipeline that overrides ``build`` and ``plan``."""
    return cast("Candidate", cand)


class CandidatePipeline:
    """The steps that turn a :class:`~hwtune.space.Candidate` into scored figures on a device.

    Args:
        space: The search space (family, input, classes, precision policies).
        device: The device profile figures are obtained for.
        runtime: Runtime name to ship to (default: :func:`ship_runtime_name`).
    """

    #: Where training runs (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``; ``None``: the CPU, where
    #: models are built) and its mixed precision (``hwtune.engine``); ``tune(train_device=)`` sets them.
    train_device: str | None = None
    amp: str | None = None

    def __init__(self, space: SpaceLike, device: DeviceProfile, *, runtime: str | None = None) -> None:
        self.space = space
        self.device = device
        self.runtime_name = ship_runtime_name(device, runtime)

    # -- shapes ---------------------------------------------------------------------------------
    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        ch, size, _ = input_spec(self.space)
        return (1, ch, size, size)

    @property
    def num_classes(self) -> int:
        return input_spec(self.space)[2]

    @property
    def runtime(self) -> Runtime:
        from hwtune.runtimes import get_runtime

        return get_runtime(self.runtime_name)

    # -- steps ----------------------------------------------------------------------------------
    def build(self, cand: CandidateLike) -> torch.nn.Module:
        """A freshly initialised model of the candidate's architecture."""
        from hwtune.families import create_model

        ch, size, ncls = input_spec(self.space)
        return create_model(self.space.family, _recipe(cand), num_classes=ncls, in_channels=ch, input_size=size)

    def initial_model(self, cand: CandidateLike, *, seed: int, data: DataSplits | None = None) -> torch.nn.Module:
        """The model a trial starts from: fresh weights seeded by ``seed`` (strategy ``scratch``)."""
        import torch

        torch.manual_seed(seed)
        return self.build(cand)

    @property
    def strategy(self) -> str:
        """How candidates get their weights (``scratch`` here; see :class:`~hwtune.tuner.inherit.InheritPipeline`)."""
        return "scratch"

    def plan(self, cand: CandidateLike) -> PrecisionPlan:
        """The candidate's precision per module prefix (uniform or mixed)."""
        from hwtune.families import get_family
        from hwtune.precision import PrecisionPlan

        own = getattr(self.space, "precision_plan", None)
        if callable(own):  # a derived space (hwtune.compress) knows its stages' modules
            return PrecisionPlan.coerce(own(cand))
        fam = get_family(self.space.family)
        recipe_cand = _recipe(cand)
        return PrecisionPlan.coerce(recipe_cand.precision_plan(fam.stage_prefixes(recipe_cand)))

    def profile(
        self,
        model: torch.nn.Module,
        plan: PrecisionPlan,
        *,
        measure: bool,
        time_budget_s: float,
        device: DeviceProfile | None = None,
        calibration: np.ndarray | None = None,
        ship_to: Path | None = None,
    ) -> dict[str, Any]:
        """The cheap profile (no training): MACs, params, bytes, peak activations, latency, fits.

        With ``ship_to``, a device whose working memory is measured on the deployable file (TFLite Micro) keeps
        that file there, converted with ``calibration``: the dict's ``shipped`` is then a
        :class:`~hwtune.runtimes.ShippedModel` that :meth:`ship` would have written for these weights (None
        when the profile converted nothing).
        """
        from hwtune.profiler import profile_model

        rep = profile_model(
            model,
            self.input_shape,
            device=device or self.device,
            precision=plan,
            measure=measure,
            layers=False,
            time_budget_s=time_budget_s,
            calibration_data=calibration,
            ship_to=ship_to,
        )
        d = rep.to_dict()
        d.pop("layers", None)
        d.pop("device", None)
        if ship_to is not None:
            d["shipped"] = rep.shipped if rep.shipped is not None and rep.shipped.runtime == self.runtime.name else None
        return d

    def train(
        self,
        model: torch.nn.Module,
        data: DataSplits,
        *,
        epochs: float,
        batch_size: int,
        lr: float | None,
        seed: int,
        threads: int | None = None,
    ) -> Any:
        """Train ``model`` in place for ``epochs`` (fractional epochs allowed); returns the train stats."""
        from hwtune.training import TrainBudget, train

        kw: dict[str, Any] = {"budget": TrainBudget(epochs=epochs), "batch_size": batch_size, "seed": seed}
        if lr is not None:
            kw["lr"] = lr
        return train(model, data, progress=False, threads=threads, train_device=self.train_device, amp=self.amp, **kw)

    def evaluate(self, target: Any, dataset: Any, *, batch_size: int) -> float:
        """Validation accuracy of a module (torch) or of a shipped file (its runtime)."""
        import torch

        from hwtune.runtimes import ShippedModel
        from hwtune.training import evaluate

        # A ShippedModel runs on the runtime that shipped it, or on the one that runtime names for searches
        # (tflite-micro: LiteRT's kernels on the same .tflite; export scores in TFLite Micro itself), with the
        # threads this process trains with: LiteRT's interpreter would take one (a 28 M-MAC int8 CIFAR file
        # scored 1.35x faster on 2 threads than on 1).
        threads = torch.get_num_threads() if isinstance(target, ShippedModel) else None
        return float(evaluate(_search_target(target), dataset, batch_size=batch_size, threads=threads).accuracy)

    def ship(
        self,
        model: torch.nn.Module,
        plan: PrecisionPlan,
        workdir: Path,
        *,
        calibration: np.ndarray | None,
        seed: int,
    ) -> ShippedModel:
        """The file that ships ``model`` at ``plan`` on the pipeline's runtime (quantized when the plan says so)."""
        import torch

        rt = self.runtime
        example = torch.zeros(*self.input_shape)
        out = Path(workdir) / f"model{rt.suffix}"
        return rt.export(model, example, plan, out, calibration=calibration, device=self.device, seed=seed)

    def extra_artifacts(self, model: torch.nn.Module, workdir: Path) -> dict[str, Path]:
        """Files stored with a trial besides its weights: figure name -> file (none by default)."""
        return {}

    def measure(
        self, shipped: ShippedModel, *, time_budget_s: float, device: DeviceProfile | None = None
    ) -> dict[str, Any]:
        """Latency of the shipped file measured on this machine with the device's threads."""
        import numpy as np

        dev = device or self.device
        rt = self.runtime
        example = np.zeros(self.input_shape, dtype=np.float32)
        m = rt.measure_latency(shipped, example, threads=dev.threads, time_budget_s=time_budget_s)
        return jsonable(m.to_dict())


def converts_once(pipeline: Any, plan: PrecisionPlan) -> bool:
    """Whether ``pipeline``'s profile converts the very file its ``ship`` writes for ``plan``: the profiler
    converts it to measure working memory (:func:`hwtune.profiler.converts_to_measure_memory`), the pipeline ships
    on that runtime, and neither step is overridden (a pipeline that ships its own way ships every trial itself)."""
    from hwtune.profiler import converts_to_measure_memory

    cls = type(pipeline)
    return (
        converts_to_measure_memory(pipeline.device, plan)
        and pipeline.runtime.name == pipeline.device.runtime
        and getattr(cls, "profile", None) is CandidatePipeline.profile
        and getattr(cls, "ship", None) is CandidatePipeline.ship
    )


def _search_target(target: Any) -> Any:
    """``target`` as a search scores it: a shipped file moves to its runtime's ``search_scoring_runtime``."""
    import dataclasses

    from hwtune.runtimes import ShippedModel, search_scoring_runtime

    other = search_scoring_runtime(target.runtime) if isinstance(target, ShippedModel) else None
    return target if other is None else dataclasses.replace(target, runtime=other)


class DistilledPipeline(CandidatePipeline):
    """Candidates that start from ``parent``'s weights and are fine-tuned distilled from it.

    What strategies ``inherit`` (:class:`~hwtune.tuner.inherit.InheritPipeline`: a trained supernet
    parent) and ``compress`` (:class:`~hwtune.tuner.compress.CompressPipeline`: the user's model)
    share; each says how a candidate is cut out of the parent (``initial_model``).

    Args:
        space, device, runtime: as :class:`CandidatePipeline`.
        parent: The model candidates come from and are distilled from (set later when it is trained).
    """

    def __init__(
        self,
        space: SpaceLike,
        device: DeviceProfile,
        *,
        runtime: str | None = None,
        parent: torch.nn.Module | None = None,
    ) -> None:
        super().__init__(space, device, runtime=runtime)
        self.parent = parent

    def train(
        self,
        model: torch.nn.Module,
        data: DataSplits,
        *,
        epochs: float,
        batch_size: int,
        lr: float | None,
        seed: int,
        threads: int | None = None,
    ) -> Any:
        """Fine-tune ``model`` for ``epochs`` (fractional allowed), distilled from :attr:`parent`."""
        from hwtune.supernet import finetune

        return finetune(
            model,
            data,
            epochs=epochs,
            teacher=self.parent,
            lr=lr,
            batch_size=batch_size,
            seed=seed,
            threads=threads,
            train_device=self.train_device,
            amp=self.amp,
        )
