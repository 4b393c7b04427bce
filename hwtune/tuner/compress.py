"""``compress()``: search a user's own trained model for a device (pruned widths, dropped blocks, per-stage precision).

The model side (safe loading, the derived :class:`~hwtune.compression.CompressSpace`, pruning with
Torch-Pruning) is :mod:`hwtune.compression`; this module runs it through the ordinary tuner, so the
result is an ordinary hwtune study (``front``, ``report``, ``finalize``, ``export``, resume, several
devices):

* the space is the derived one, wrapped so the tuner sees the same interface as a recipe's;
* a candidate is a pruned copy of the user's model (weights inherited, BatchNorm recalibrated):
  scored without training at rung 0, the promoted ones fine-tuned with distillation from the
  original model for the schedule's rung budgets -- never trained from scratch;
* the user's model itself is enqueued first: its accuracy on the validation split, as it ships,
  is the baseline row of the front;
* every trial stores its pruned model as a ``torch.export`` archive (``.pt2``, weights included,
  loaded back without unpickling), so export and finalize need neither the user's code nor the
  original model; the original is stored too (``source_model`` in the study settings, with its
  sha256).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwtune._tempdirs import work_dir
from hwtune.compression.user_space import UserModelSpace
from hwtune.errors import ConfigError
from hwtune.front import TuneResult
from hwtune.normalization import with_normalization
from hwtune.tuner.api import tune
from hwtune.tuner.config import Strategy
from hwtune.tuner.inputs import data_spec, load_data
from hwtune.tuner.pipeline import DistilledPipeline

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from hwtune.compression import CompressCandidate, CompressSpace
    from hwtune.data import DataSplits
    from hwtune.device import DeviceProfile
    from hwtune.precision import PrecisionPlan

__all__ = ["CompressPipeline", "compress", "load_compress_model"]


def load_compress_model(path: str | Path) -> torch.nn.Module:
    """A pruned trial model stored as a ``torch.export`` archive (weights-only load, no unpickling)."""
    from hwtune.compression import load_user_model

    return load_user_model(str(path)).eval()


class CompressPipeline(DistilledPipeline):
    """Candidates are pruned copies of ``parent`` (the user's model), fine-tuned distilled from it (``train``)."""

    space: UserModelSpace

    def __init__(
        self,
        space: UserModelSpace,
        device: DeviceProfile,
        *,
        runtime: str | None = None,
        parent: torch.nn.Module | None = None,
        importance: str = "magnitude",
    ) -> None:
        super().__init__(space, device, runtime=runtime, parent=parent)
        self.importance = importance

    @property
    def strategy(self) -> str:
        return "compress"

    # candidates of a derived space are CompressCandidates, not the recipe Candidates of the base pipeline
    def build(self, cand: CompressCandidate) -> torch.nn.Module:  # type: ignore[override]
        """The pruned copy of the user's model (dropped blocks, pruned channels, the parent's weights)."""
        import torch

        from hwtune.compression import apply_candidate

        if self.parent is None:
            raise ConfigError("compress: the pipeline has no parent model")
        example = torch.zeros(*self.input_shape)
        model, _ = apply_candidate(
            self.parent, self.space.cspace, cand, example_input=example, importance=self.importance
        )
        return model.eval()

    def plan(self, cand: CompressCandidate) -> PrecisionPlan:  # type: ignore[override]
        return self.space.precision_plan(cand)

    def initial_model(  # type: ignore[override]
        self, cand: CompressCandidate, *, seed: int, data: DataSplits | None = None
    ) -> torch.nn.Module:
        from hwtune.supernet import recalibrate_bn

        model = self.build(cand)
        if data is not None and cand.key != self.space.cspace.baseline().key:
            # the unmodified model keeps the user's statistics
            recalibrate_bn(model, data, seed=seed, train_device=self.train_device, amp=self.amp)
        return model.eval()

    def extra_artifacts(self, model: torch.nn.Module, workdir: Path) -> dict[str, Path]:
        """The trained pruned model as a ``torch.export`` archive (what export and finalize load)."""
        return {"model_artifact_id": export_archive(model, self.input_shape, Path(workdir) / "model.pt2")}


def export_archive(model: torch.nn.Module, input_shape: Sequence[int], path: Path) -> Path:
    """``torch.export`` ``model`` with a dynamic batch and save it (weights included)."""
    import torch

    example = torch.zeros(2, *input_shape[1:])
    was_training = model.training
    model.eval()
    try:
        ep = torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim.AUTO},))
    finally:
        model.train(was_training)
    torch.export.save(ep, str(path))
    return path


def _as_data_arg(load: Mapping[str, Any]) -> dict[str, Any]:
    """The stored load spec as ``tune``'s ``data=`` mapping (``name`` key)."""
    kw = dict(load)
    kw["name"] = kw.pop("name_or_path")
    return kw


# How far the user's model may score above its test accuracy on the validation split before hwtune
# says the split is likely images it was trained on (a model's val and test accuracy on fresh data
# differ by sampling noise only: ~0.3 points at 10,000 images).
CONTAMINATION_POINTS = 1.5


def _nonempty(split: Any) -> bool:
    """A split that is there and has samples (a torch ``Dataset`` is not typed as sized)."""
    return split is not None and len(split) > 0


def validation_check(model: torch.nn.Module, splits: DataSplits, *, held_out: bool) -> dict[str, Any]:
    """The user's model scored on the validation and test splits before any trial, and what that says.

    Returns ``{"val_source", "val_accuracy", "test_accuracy", "warning"}``: ``val_source`` is
    ``"held-out"`` (``val_data=``) or ``"carved"`` (from the training data the model may have seen);
    ``warning`` is a one-line message, or None.
    """
    from hwtune.training import evaluate

    val = evaluate(model, splits.val).accuracy if _nonempty(splits.val) else None
    test = evaluate(model, splits.test).accuracy if _nonempty(splits.test) else None
    warning = None
    if not held_out:
        warning = (
            "validation is carved from the training data, which your model may have been trained on: "
            "accuracies are inflated and favour the least-changed models; give a held-out set (--val-data / val_data=)"
        )
        if val is not None and test is not None and 100 * (val - test) > CONTAMINATION_POINTS:
            warning = (
                f"your model scores {100 * val:.2f}% on the validation split carved from the training data but "
                f"{100 * test:.2f}% on the test split ({100 * (val - test):.1f} points more): it was most likely "
                "trained on those validation images, so every accuracy of this study is inflated; "
                "give a held-out set (--val-data / val_data=)"
            )
    return {
        "val_source": "held-out" if held_out else "carved",
        "val_accuracy": val,
        "test_accuracy": test,
        "warning": warning,
    }


def compress(
    model: Any,
    data: Any = "fashion-mnist",
    *,
    val_data: Any = None,
    device: Any = "host",
    example_input: Any = None,
    normalize: tuple[Sequence[float], Sequence[float]] | None = None,
    space: CompressSpace | str | Path | None = None,
    source: str | None = None,
    importance: str = "magnitude",
    **tune_kwargs: Any,
) -> TuneResult:
    """Compress a trained ``model`` for ``device``: a Pareto front of pruned, quantized versions of it.

    Args:
        model: The trained ``torch.nn.Module`` (left untouched).
        data: What it was trained on: a dataset name or directory, a mapping of
            :func:`hwtune.data.load_dataset` arguments, or a :class:`~hwtune.data.DataSplits`.
        val_data: A held-out validation set the model never saw (a dataset name or directory whose
            training split is used whole, or a torch dataset). Without it, validation is carved from
            ``data``'s training split, which the model was likely trained on: hwtune says so, and
            warns when the model scores more than 1.5 points higher there than on the test split.
        device: Device profile id(s), as for :func:`hwtune.tune`.
        example_input: One input batch ``(1, C, H, W)``; default: the data's shape.
        normalize: ``(mean, std)`` per channel the weights were trained with; default the dataset's.
        space: A :class:`~hwtune.compression.CompressSpace` or the path of an edited recipe
            (``hwtune compress MODEL --show-space``); default: derived from the model.
        source: How the model was given (``torchvision:resnet18``, a file), recorded in the study.
        importance: Channel importance for pruning (``magnitude``, ``l1``, ``l2``, ``taylor``).
        **tune_kwargs: Everything :func:`hwtune.tune` takes (objectives, constraints, n_trials,
            timeout, storage, study_name, out_dir, budget, sampler, seed, ...).

    Returns:
        The :class:`TuneResult`; its first trial is the unmodified model (the baseline row).

    Example:
        >>> result = hwtune.compress(my_model, "fashion-mnist", device="raspberry-pi-4", n_trials=20)  # doctest: +SKIP
    """
    import torch

    from hwtune.compression import CompressSpace, check_model, check_space, derive_space, state_sha256

    if not isinstance(model, torch.nn.Module):
        raise ConfigError(f"compress needs a torch.nn.Module, got {type(model).__name__}")
    for key in ("strategy", "pipeline", "parent_epochs"):
        if key in tune_kwargs:
            raise ConfigError(f"compress: {key}= is not an option (candidates always inherit the model's weights)")
    from hwtune.engine import resolve_amp, resolve_device

    resolve_amp(tune_kwargs.get("amp"), resolve_device(tune_kwargs.get("train_device", "auto")))  # before any work
    load, splits = data_spec(data, None, val_data)
    if splits is None:
        splits = load_data(load)  # type: ignore[arg-type]
    held_out = val_data is not None or bool(load and load.get("val_data"))
    if normalize is not None:
        splits = with_normalization(splits, *normalize)
        if load is not None:
            load = {**load, "normalize": {"mean": list(splits.mean or ()), "std": list(splits.std or ())}}
    shape = tuple(splits.input_shape)
    example = example_input if example_input is not None else torch.zeros(1, *shape)
    if tuple(example.shape[1:]) != shape:
        raise ConfigError(
            f"example_input has shape {tuple(example.shape)} but the data's images are {'x'.join(map(str, shape))}"
        )
    model = model.eval()
    check_model(model, example, splits.num_classes)
    if space is None:
        cspace = derive_space(model, example)
    elif isinstance(space, CompressSpace):
        cspace = space
    else:
        cspace = CompressSpace.from_toml(space)
    check_space(cspace, model, example)
    name = f"compress-{type(model).__name__.lower()}"
    adapter = UserModelSpace(cspace, name=name, dataset=splits.name)
    check = validation_check(model, splits, held_out=held_out)
    if check["warning"]:
        from hwtune.progress import write

        write(f"warning: {check['warning']}", file=sys.stderr)
    src = {"sha256": state_sha256(model), "class": type(model).__name__, "source": source, "validation": check}
    with work_dir("compress") as tmp:
        archive = export_archive(model, (1, *shape), Path(tmp) / "source.pt2")
        return tune(
            adapter,
            device=device,
            data=splits if load is None else _as_data_arg(load),
            pipeline=lambda sp, dev, runtime=None: CompressPipeline(
                sp, dev, runtime=runtime, parent=model, importance=importance
            ),
            strategy=Strategy("compress", source_model={**src, "archive": str(archive)}),
            **tune_kwargs,
        )
