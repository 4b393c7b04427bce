"""The profiler: what a model costs on a device — MACs, params, bytes, peak activations, latency, fit.

``profile_model`` is the entry point. Pieces usable on their own: ``trace_layers`` (per-layer facts and
activation liveness, from :mod:`hwtune.graph`), ``count_flops`` (FlopCounterMode), ``measure_latency`` (any
registered runtime, with a CI-based stopping rule), ``compare_op_times`` (per-op times of two models),
``trace_onnx`` (the same facts for an ``.onnx`` file), ``roofline_estimate``.

How the latency is obtained depends on the device profile, and the report always says which:

- ``latency = "measure"`` (this host): measured on the runtime (``profile.runtime`` unless overridden),
  through :mod:`hwtune.runtimes`: the model is shipped at the precision plan (``Runtime.export``; an fp32
  module on a runtime that runs modules, torch eager, is measured as it is) and timed there.
- ``latency = "predict"``: ``hwtune.predictor.predict`` — ``predicted`` when the profile is calibrated,
  otherwise ``estimated (roofline, uncalibrated)`` (the same analytical roofline labelled as such).

Example:
    >>> import torch, hwtune
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.LazyLinear(10))
    >>> report = hwtune.profile_model(net, (1, 1, 28, 28), device="stm32h743", precision="int8")  # doctest: +SKIP
    >>> report.latency_source, report.fits.overall  # doctest: +SKIP
    ('estimated', True)
"""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from hwtune._tempdirs import work_dir
from hwtune.device import calibrated_elsewhere
from hwtune.errors import ConfigError, HwtuneError, RuntimeUnavailableError
from hwtune.graph import FlopCount, LayerGraph, LayerInfo, count_flops, trace_layers, trace_onnx
from hwtune.precision import PrecisionPlan
from hwtune.profiler.latency import measure_latency
from hwtune.profiler.op_times import OpTimeComparison, OpTimeDiff, compare_op_times
from hwtune.profiler.profile_report import LIVENESS_SOURCE, Fits, ProfileReport
from hwtune.profiler.roofline import ROOFLINE_LABEL, LatencyEstimate, roofline_estimate
from hwtune.runtimes import (
    LatencyMeasurement,
    Runtime,
    ShippedModel,
    TimingBudget,
    get_runtime,
    list_runtimes,
    runtime_for_file,
)
from hwtune.runtimes.onnxruntime import ort_session

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

    from hwtune.device import DeviceProfile

__all__ = [
    "ROOFLINE_LABEL",
    "Fits",
    "FlopCount",
    "LatencyEstimate",
    "LatencyMeasurement",
    "LayerGraph",
    "LayerInfo",
    "OpTimeComparison",
    "OpTimeDiff",
    "ProfileReport",
    "TimingBudget",
    "compare_op_times",
    "converts_to_measure_memory",
    "count_flops",
    "measure_latency",
    "ort_session",
    "profile_model",
    "roofline_estimate",
    "trace_layers",
    "trace_onnx",
]

Progress = Callable[[str], None]


def _check_shape(shape: Any) -> tuple[int, ...]:
    try:
        dims = tuple(shape)
        ok = len(dims) >= 1 and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims)
    except TypeError:
        ok, dims = False, ()
    if not ok:
        raise ConfigError(f"input_shape must be positive integers, batch first (e.g. (1, 3, 224, 224)), got {shape!r}")
    return dims


def _is_onnx(model: Any) -> bool:
    return isinstance(model, (str, Path))


def profile_model(
    model: nn.Module | str | Path,
    input_shape: Sequence[int] | torch.Tensor | None = None,
    *,
    device: str | Path | DeviceProfile = "host",
    precision: str | PrecisionPlan = "fp32",
    runtime: str | None = None,
    measure: bool = True,
    layers: bool = True,
    time_budget_s: float | None = None,
    target_ci_pct: float | None = None,
    timing: TimingBudget | None = None,
    calibration_data: np.ndarray | None = None,
    quant_config: Any = None,
    name: str | None = None,
    progress: Progress | None = None,
    ship_to: Path | None = None,
) -> ProfileReport:
    """Profile a model for a device: MACs, FLOPs, params, weight bytes, peak activations, fit and latency.

    Args:
        model: A torch ``nn.Module`` or a path to an ``.onnx`` file.
        input_shape: Input shape, batch first (``(1, 3, 224, 224)``), or an example input tensor. Optional
            for ONNX files with a static input (a symbolic batch becomes 1).
        device: Bundled profile id, path to a profile TOML, or a ``DeviceProfile``.
        precision: ``fp32``, ``fp16``, ``int8`` or a ``PrecisionPlan`` (mixed precision).
        runtime: A registered runtime to measure on (measure devices; ``hwtune.runtimes.list_runtimes()``);
            default ``profile.runtime``.
        measure: Obtain a latency (measured or predicted as the device dictates). False gives the cheap
            profile only (latency ``unavailable``).
        layers: Include the per-layer table (and per-op times from ONNX Runtime's profiler).
        time_budget_s: Budget for the latency measurement (the stopping rule usually ends it sooner;
            default 10 s), replacing the one in ``timing``.
        target_ci_pct: Stop measuring once the median's 95% CI is within ± this % (default 2), replacing
            the one in ``timing``.
        timing: Every setting of the timed loop as one :class:`~hwtune.runtimes.TimingBudget`.
        calibration_data: int8 calibration images (N, C, H, W) float32, normalized like training data;
            None calibrates on random data (fine for latency; the report notes it).
        quant_config: ``hwtune.quant.QuantConfig`` for int8; default: the quant defaults, except that
            random calibration uses only 16 samples (ranges from noise do not improve with more).
        name: Model name for the report (default: class name or file path).
        progress: Called with a short description at the start of each step (the CLI prints the slow ones).
        ship_to: Where to keep the deployable file that the working memory is measured on (microcontroller
            profiles that convert the model to measure it), returned as ``report.shipped``; by default it is
            written to a temporary file and dropped. A caller that ships these very weights at this plan with
            ``calibration_data`` (a search scoring inherited weights) then converts once, not twice.

    Returns:
        A ``ProfileReport``.

    Raises:
        ConfigError: Bad shape or precision; a runtime that cannot run an ONNX file given as ``model``.
        UnknownNameError: Unknown device id or runtime (with close matches).
        ModelError: The model rejects the input (names expected vs given shape) or the file is unreadable.

    Example:
        >>> import torch, hwtune
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.ReLU())
        >>> r = hwtune.profile_model(net, (1, 1, 28, 28), device="raspberry-pi-4", layers=False)
        >>> r.macs, r.latency_source in ("predicted", "estimated")
        (48672, True)
    """
    from hwtune.device import load_profile

    start = time.perf_counter()
    say: Progress = progress or (lambda _msg: None)
    profile = load_profile(device)
    plan = PrecisionPlan.coerce(precision)
    if runtime is not None:
        get_runtime(runtime)  # an unknown name fails here, with close matches, before any tracing
    notes: list[str] = []
    onnx_file = _is_onnx(model)
    flat = {"time_budget_s": time_budget_s, "target_ci_pct": target_ci_pct}
    timing = TimingBudget.coerce(timing, **{k: v for k, v in flat.items() if v is not None})

    # --- structure: layers, MACs, params, bytes, peak activations -------------------------------
    graph, example, shape = _structure(model, input_shape, plan, onnx_file=onnx_file, say=say)
    model_name = name or (str(model) if onnx_file else type(model).__name__)
    notes.extend(graph.notes)

    fits_lower_bound = (
        graph.total_weight_bytes <= profile.storage_bytes and graph.peak_activation_bytes <= profile.ram_bytes
    )
    working, working_source, storage, shipped = (None, LIVENESS_SOURCE, None, None)
    if fits_lower_bound:  # a model over the limits by its lower bounds needs no arena measurement to say so
        working, working_source, storage, shipped = _working_memory(
            model, example, plan, profile, calibration_data, notes, say, ship_to
        )
    fits = Fits.check(
        graph.total_weight_bytes if storage is None else storage,
        graph.peak_activation_bytes if working is None else working,
        storage_bytes=profile.storage_bytes,
        ram_bytes=profile.ram_bytes,
    )

    # --- latency --------------------------------------------------------------------------------
    run_on = profile.runtime if profile.latency_source == "predict" else runtime or profile.runtime
    latency, label, layer_times, layer_source = _latency(
        model,
        example,
        shape,
        graph,
        plan,
        profile,
        runtime,
        measure=measure,
        onnx_file=onnx_file,
        layers=layers,
        timing=timing,
        calibration_data=calibration_data,
        quant_config=quant_config,
        notes=notes,
        say=say,
    )
    if latency is None:
        source = "unavailable"
    else:
        source = "measured" if isinstance(latency, LatencyMeasurement) else latency.source

    return ProfileReport(
        model=model_name,
        input_shape=tuple(shape),
        device=profile.id,
        precision=plan.label,
        runtime=run_on,
        macs=graph.total_macs,
        flops=graph.total_flops,
        params=graph.total_params,
        weight_bytes=graph.total_weight_bytes,
        peak_activation_bytes=graph.peak_activation_bytes,
        peak_activation_bytes_unfused=graph.peak_activation_bytes_unfused,
        latency_ms=None if latency is None else float(latency.latency_ms),
        latency_source=source,
        latency_label=label,
        latency=latency,
        fits=fits,
        layers=graph.layers if layers else (),
        layer_times_ms=layer_times if layers else {},
        layer_times_source=layer_source if layers else "unavailable",
        notes=tuple(dict.fromkeys(notes)),
        traced_with=graph.traced_with,
        profile_seconds=time.perf_counter() - start,
        working_memory_bytes=graph.peak_activation_bytes if working is None else working,
        working_memory_source=working_source,
        storage_bytes=storage,
        shipped=shipped,
    )


def _arena_device(profile: DeviceProfile) -> bool:
    """A microcontroller whose runtime is TFLite Micro: its working memory is the tensor arena, measured."""
    return profile.kind == "mcu" and profile.runtime == "tflite-micro"


def converts_to_measure_memory(profile: DeviceProfile, plan: str | PrecisionPlan) -> bool:
    """Whether profiling a torch model at ``plan`` for ``profile`` converts it to the file that ships there, to
    measure its working memory (an int8 model for a TFLite Micro microcontroller; see ``profile_model``'s
    ``ship_to``)."""
    return _arena_device(profile) and PrecisionPlan.coerce(plan).precisions == ("int8",)


def _working_memory(
    model: Any,
    example: Any,
    plan: PrecisionPlan,
    profile: DeviceProfile,
    calibration_data: Any,
    notes: list[str],
    say: Progress,
    ship_to: Path | None = None,
) -> tuple[int | None, str, int | None, ShippedModel | None]:
    """(working memory bytes, its source, deployable file bytes, the file when kept) for microcontroller profiles.

    On an ``mcu`` profile whose runtime is TFLite Micro, an int8 model is shipped as the ``.tflite``
    that runs there and its tensor arena is measured by the TFLite Micro interpreter (what decides
    "fits"; 1.6-2.4x the liveness estimate on typical CNNs). Otherwise the liveness estimate stands,
    labelled as the lower bound it is.
    """
    if not _arena_device(profile) or _is_onnx(model):
        return None, LIVENESS_SOURCE, None, None
    rt = get_runtime("tflite-micro")
    if not rt.available():
        notes.append(
            "working memory is the liveness estimate (a lower bound): pip install 'hwtune[litert]' "
            "to measure the TFLite Micro arena"
        )
        return None, LIVENESS_SOURCE, None, None
    if not converts_to_measure_memory(profile, plan):
        notes.append(f"TFLite Micro runs int8 models; the arena of a {plan.label} model is not measured")
        return None, LIVENESS_SOURCE, None, None
    import numpy as np

    say("measuring the TFLite Micro arena")
    calib = calibration_data
    if calib is None:
        calib = np.random.default_rng(0).standard_normal((16, *tuple(example.shape[1:]))).astype(np.float32)
    with work_dir("tflm") as tmp, contextlib.redirect_stderr(io.StringIO()):
        # (the converter and quantizer draw their own progress bars on stderr)
        out = Path(ship_to) if ship_to is not None else Path(tmp) / "model.tflite"
        shipped = rt.export(model, example, plan, out, calibration=calib, device=profile)
        arena = int(shipped.info["arena_bytes"])
        source = str(shipped.info.get("arena_source", "measured (tflite-micro arena)"))
        return arena, source, shipped.size_bytes, shipped if ship_to is not None else None


def _structure(
    model: Any, input_shape: Any, plan: PrecisionPlan, *, onnx_file: bool, say: Progress
) -> tuple[LayerGraph, Any, tuple[int, ...]]:
    """Trace the torch model (or read the ONNX file): its layer graph, an example input and the input shape."""
    if onnx_file:
        import numpy as np

        path = Path(model)
        if input_shape is not None and hasattr(input_shape, "shape"):
            input_shape = tuple(int(s) for s in input_shape.shape)
        shape = _check_shape(input_shape) if input_shape is not None else None
        say(f"reading {path.name}")
        graph = trace_onnx(path, shape, plan)
        sample = np.random.default_rng(0).standard_normal(graph.input_shape).astype(np.float32)
        return graph, sample, tuple(graph.input_shape)
    import torch

    if isinstance(input_shape, torch.Tensor):
        example = input_shape
    elif input_shape is None:
        raise ConfigError("input_shape is required for a torch model (e.g. (1, 3, 224, 224))")
    else:
        example = torch.randn(_check_shape(input_shape), generator=torch.Generator().manual_seed(0))
    say("tracing the model")
    graph = trace_layers(model, example, plan)
    return graph, example, tuple(int(s) for s in example.shape)


def _latency(
    model: Any,
    example: Any,
    shape: tuple[int, ...],
    graph: LayerGraph,
    plan: PrecisionPlan,
    profile: DeviceProfile,
    runtime: str | None,
    *,
    measure: bool,
    onnx_file: bool,
    notes: list[str],
    say: Progress,
    **measure_kw: Any,
) -> tuple[LatencyMeasurement | LatencyEstimate | None, str, dict[str, float], str]:
    """The latency the device profile calls for: (latency, label, ms per layer, per-layer source)."""
    unsupported = [p for p in plan.precisions if not profile.supports(p)]
    if not measure:
        return None, "unavailable (latency not requested)", {}, "unavailable"
    if unsupported:
        notes.append(f"{profile.id} supports {', '.join(profile.precisions)}; no latency for {plan.label}")
        return None, f"unavailable ({profile.id} does not support {', '.join(unsupported)})", {}, "unavailable"
    if profile.latency_source == "measure":
        rt = get_runtime(runtime or profile.runtime)
        measured, times, source = _measure(
            model, example, graph, plan, profile, rt, onnx_file=onnx_file, notes=notes, say=say, **measure_kw
        )
        return measured, measured.label if measured is not None else "unavailable (see notes)", times, source
    if runtime is not None and runtime != profile.runtime:
        notes.append(
            f"latency on {profile.id} is predicted for its runtime ({profile.runtime}); runtime {runtime!r} ignored"
        )
    say(f"predicting latency on {profile.id}")
    estimate = _predict(model, shape, graph, plan, profile, onnx_file=onnx_file, notes=notes)
    return estimate, estimate.label, dict(estimate.per_layer_ms), estimate.source


def _measure(
    model: Any,
    example: Any,
    graph: LayerGraph,
    plan: PrecisionPlan,
    profile: DeviceProfile,
    rt: Runtime,
    *,
    onnx_file: bool,
    layers: bool,
    timing: TimingBudget,
    calibration_data: Any,
    quant_config: Any,
    notes: list[str],
    say: Progress,
) -> tuple[LatencyMeasurement | None, dict[str, float], str]:
    """Ship the model to ``rt`` at ``plan``, time it, and (``layers``) attribute its per-op times to layers."""
    threads = int(profile.threads)
    if onnx_file and rt.suffix != ".onnx":
        raise ConfigError(
            f"runtime {rt.name!r} cannot run an ONNX file ({model}); use runtime {runtime_for_file(model).name!r}"
        )
    if not rt.supports(plan):
        able = [n for n in list_runtimes() if get_runtime(n).supports(plan)]
        notes.append(
            f"runtime {rt.name!r} ships {', '.join(rt.precisions)} only; {plan.label} can be measured on "
            f"{', '.join(repr(n) for n in able) or 'no registered runtime'}"
        )
        return None, {}, "unavailable"
    try:
        rt.require()
    except RuntimeUnavailableError as exc:
        notes.append(f"{exc}; nothing is measured")
        return None, {}, "unavailable"
    if "fp16" in plan.precisions and not any(f in profile.isa for f in ("avx512_fp16", "fphp", "asimdhp")):
        notes.append(
            "this CPU has no fp16 arithmetic: runtimes run fp16 graphs through casts, so expect fp32 latency or worse"
        )
    import numpy as np

    x = example.detach().cpu().numpy() if hasattr(example, "detach") else np.asarray(example)
    plural = "s" if threads > 1 else ""
    with work_dir("profile") as tmp:
        target = _ship(
            model,
            example,
            plan,
            profile,
            rt,
            Path(tmp),
            onnx_file=onnx_file,
            calibration_data=calibration_data,
            quant_config=quant_config,
            notes=notes,
            say=say,
        )
        say(f"measuring latency on {rt.name} ({threads} thread{plural}, up to {timing.time_budget_s:g} s)")
        measured = rt.measure_latency(
            target,
            example if rt.runs_modules else x,
            threads=threads,
            timing=timing,
        )
        if not layers or rt.runs_modules and target is model:
            return measured, {}, "unavailable"
        # Enough profiled runs for a stable per-op median, within ~15% of the budget.
        runs = int(max(5, min(50, 0.15 * timing.time_budget_s * 1000.0 / max(measured.median_ms, 1e-3))))
        say(f"profiling {rt.name} ops ({runs} runs)")
        op_times = rt.op_times(target, x, threads=threads, runs=runs)
        if op_times is None:
            return measured, {}, "unavailable"
        times, unattributed = rt.layer_times(graph.layers, op_times)
        if unattributed > 0.05 * max(sum(times.values()), 1e-9):
            notes.append(
                f"{unattributed:.3f} ms of {rt.name} op time (layout reorders, casts, quantize/dequantize) "
                "belongs to no traced layer"
            )
    return measured, times, "measured"


def _ship(
    model: Any,
    example: Any,
    plan: PrecisionPlan,
    profile: DeviceProfile,
    rt: Runtime,
    tmp: Path,
    *,
    onnx_file: bool,
    calibration_data: Any,
    quant_config: Any,
    notes: list[str],
    say: Progress,
) -> Any:
    """What ``rt`` times: the module itself (fp32 on a runtime that runs modules), the given fp32 file, or an export."""
    fp32 = plan.precisions == ("fp32",)
    if fp32 and (onnx_file or rt.runs_modules):
        return Path(model) if onnx_file else model
    if onnx_file:
        say(f"converting the ONNX graph to {plan.label}")
    else:
        say(f"exporting to {rt.name} ({plan.label})")
    # An ONNX file only reaches a runtime with the .onnx suffix (checked by the caller), whose export takes a path.
    shipped = rt.export(
        cast(Any, Path(model)) if onnx_file else model,
        example,
        plan,
        tmp / f"model.shipped{rt.suffix}",
        calibration=calibration_data,
        device=profile,
        quant_config=quant_config,
    )
    notes.extend(str(n) for n in shipped.info.get("notes", ()))
    if shipped.info.get("calibration_source") == "random" and not any("random" in n for n in notes):
        notes.append("int8 calibrated on random data (no calibration_data given): fine for latency, not for accuracy")
    return shipped


def _predict(
    model: Any,
    shape: tuple[int, ...],
    graph: LayerGraph,
    plan: PrecisionPlan,
    profile: DeviceProfile,
    *,
    onnx_file: bool,
    notes: list[str],
) -> LatencyEstimate:
    if not onnx_file:
        try:
            from hwtune.predictor import predict
        except ImportError:
            predict = None  # type: ignore[assignment]
            notes.append("hwtune.predictor is unavailable: latency is an uncalibrated roofline estimate")
        if predict is not None:
            try:
                pred = predict(model, shape, device=profile, precision=plan)
            except HwtuneError as exc:
                notes.append(f"the latency predictor failed ({exc}); using the uncalibrated roofline estimate")
            else:
                source = pred.latency_source
                label = pred.source
                notes.extend(str(n) for n in pred.notes)  # e.g. "int8 not measured: extrapolated from fp32 ..."
                if source == "predicted" and pred.error_pct is not None:
                    # The held-out error holds for the calibrated precisions only: say when this one is not.
                    beyond = ""
                    for note in pred.notes:  # "int8 not measured: extrapolated from fp32 with ..."
                        what, sep, how = str(note).partition(" not measured: ")
                        if sep and how.startswith("extrapolated"):
                            beyond += f"; {what} {how.split(' with ')[0]}"
                    # a profile of this machine fitted on another CPU says so (hwtune.device.calibrated_elsewhere)
                    elsewhere = calibrated_elsewhere(profile)
                    beyond += f"; {elsewhere}" if elsewhere else ""
                    label = f"predicted (±{pred.error_pct:.0f}%, calibrated: {pred.method or 'unknown method'}{beyond})"
                elif source != "predicted" and not label.startswith("estimated"):
                    label = f"estimated ({label})"
                return LatencyEstimate(
                    latency_ms=float(pred.latency_ms),
                    source=source,
                    label=label,
                    error_pct=pred.error_pct,
                    per_layer_ms={lp.name: float(lp.latency_ms) for lp in pred.per_layer},
                    device=profile.id,
                    method=str(pred.method or pred.status),
                )
    elif profile.calibration:
        notes.append(
            "the calibrated predictor needs a torch model; an ONNX file gets the uncalibrated roofline estimate"
        )
    return roofline_estimate(graph.layers, profile)
