"""Hard constraints: the values Optuna is told (``> 0`` = violated), their text, and the up-front check
that some candidate can meet them at all.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from hwtune.errors import ConfigError, HwtuneError
from hwtune.tuner.config import Constraints
from hwtune.tuner.inputs import extreme_candidate, stage_precision_of

if TYPE_CHECKING:  # pragma: no cover
    from hwtune.device import DeviceProfile
    from hwtune.space import SpaceLike
    from hwtune.tuner.pipeline import CandidatePipeline

__all__ = [
    "check_feasible_at_all",
    "choice_supported",
    "constraint_values",
    "ram_limit",
    "storage_limit",
    "violations_text",
]


def ram_limit(constraints: Constraints, device: DeviceProfile) -> int:
    """The working-memory limit in bytes: the user's, or the device's RAM, whichever is lower."""
    return min(x for x in (constraints.max_ram_bytes, device.ram_bytes) if x)


def storage_limit(constraints: Constraints, device: DeviceProfile) -> int:
    """The storage limit in bytes: the user's, or the device's storage, whichever is lower."""
    return min(x for x in (constraints.max_storage_bytes, device.storage_bytes) if x)


def constraint_values(
    figures: Mapping[str, Any], constraints: Constraints, device: DeviceProfile, stage_precisions: Sequence[str]
) -> dict[str, float]:
    """Constraint name -> value (> 0 violated, relative excess over the limit) for a profiled candidate."""
    out: dict[str, float] = {}
    ram = ram_limit(constraints, device)
    storage = storage_limit(constraints, device)
    # Working memory measured by the device's runtime (the TFLite Micro arena) when the profile has
    # it; otherwise the liveness estimate. Storage: the deployable file's size, else the weight bytes.
    out["ram"] = float(figures.get("working_memory_bytes") or figures["peak_activation_bytes"]) / ram - 1.0
    out["storage"] = float(figures.get("storage_bytes") or figures["weight_bytes"]) / storage - 1.0
    if constraints.max_latency_ms is not None:
        lat = figures.get("latency_ms")
        # A latency that cannot be obtained cannot be shown to meet the limit.
        out["latency"] = 1.0 if lat is None else float(lat) / constraints.max_latency_ms - 1.0
    if constraints.max_params is not None:
        out["params"] = float(figures["params"]) / constraints.max_params - 1.0
    unsupported = sorted({p for p in stage_precisions if not device.supports(p)})
    out["precision"] = float(len(unsupported))
    return out


def violations_text(
    values: Mapping[str, float],
    figures: Mapping[str, Any],
    constraints: Constraints,
    device: DeviceProfile,
    stage_precisions: Sequence[str],
) -> list[str]:
    msgs = []
    if values.get("ram", 0) > 0:
        if figures.get("working_memory_bytes") and figures.get("working_memory_source", "").startswith("measured"):
            what = f"working memory {figures['working_memory_bytes']} B ({figures['working_memory_source']})"
        else:
            what = f"peak activations {figures['peak_activation_bytes']} B"
        msgs.append(f"{what} > limit {ram_limit(constraints, device)} B")
    if values.get("storage", 0) > 0:
        what = f"file {figures['storage_bytes']} B" if figures.get("storage_bytes") else f"weights {figures['weight_bytes']} B"
        msgs.append(f"{what} > limit {storage_limit(constraints, device)} B")
    if values.get("latency", 0) > 0:
        msgs.append(f"latency {figures.get('latency_ms')} ms > limit {constraints.max_latency_ms} ms")
    if values.get("params", 0) > 0:
        msgs.append(f"{figures['params']} parameters > limit {constraints.max_params}")
    if values.get("precision", 0) > 0:
        bad = sorted({p for p in stage_precisions if not device.supports(p)})
        msgs.append(f"precision {', '.join(bad)} not supported by {device.id} ({', '.join(device.precisions)})")
    return msgs


# ---------------------------------------------------------------------------------------------
# The objective
# ---------------------------------------------------------------------------------------------


def check_feasible_at_all(
    space: SpaceLike, device: DeviceProfile, cons: Constraints, pipeline: CandidatePipeline, latency_budget_s: float
) -> None:
    """Raise ConfigError when no candidate can meet the hard limits (detected cheaply up front)."""
    supported = [p for p in space.precision_choices if choice_supported(space, p, device)]
    if not supported:
        raise ConfigError(
            f"device {device.id} supports precisions {', '.join(device.precisions)} but the search space offers "
            f"only {', '.join(space.precision_choices)}: no candidate can run there"
        )
    ram = ram_limit(cons, device)
    storage = storage_limit(cons, device)
    problems: list[str] = []
    best: dict[str, float] = {}
    for prec in supported:
        cand = extreme_candidate(space, largest=False, precision=prec)
        prof = pipeline.profile(
            pipeline.build(cand),
            pipeline.plan(cand),
            measure=cons.max_latency_ms is not None,
            time_budget_s=latency_budget_s,
            device=device,
        )
        figures = {
            "peak_activation_bytes": prof.get("working_memory_bytes") or prof.get("peak_activation_bytes"),
            "weight_bytes": prof.get("storage_bytes") or prof.get("weight_bytes"),
            "latency_ms": prof.get("latency_ms"),
            "params": prof.get("params"),
        }
        for k, v in figures.items():
            if v is not None:
                best[k] = min(best.get(k, math.inf), float(v))
    smallest = extreme_candidate(space, largest=False, precision=supported[0])
    desc = getattr(smallest, "label", smallest.key)
    if best.get("peak_activation_bytes", 0) > ram:
        problems.append(
            f"max RAM {ram / 1024:g} KiB is below the smallest candidate's peak activations "
            f"({best['peak_activation_bytes'] / 1024:.1f} KiB; {desc})"
        )
    if best.get("weight_bytes", 0) > storage:
        problems.append(
            f"max storage {storage / 1024:g} KiB is below the smallest candidate's weights "
            f"({best['weight_bytes'] / 1024:.1f} KiB; {desc})"
        )
    if cons.max_params is not None and best.get("params", 0) > cons.max_params:
        problems.append(f"max params {cons.max_params} is below the smallest candidate's {best['params']:.0f} ({desc})")
    # Latency is noisy: only call a limit impossible when even the smallest candidate is 2x over it.
    if cons.max_latency_ms is not None and best.get("latency_ms", 0) > 2 * cons.max_latency_ms:
        problems.append(
            f"max latency {cons.max_latency_ms:g} ms is far below the smallest candidate's "
            f"{best['latency_ms']:.3g} ms on {device.id}"
        )
    if problems:
        raise ConfigError("impossible constraints: " + "; ".join(problems))


def choice_supported(space: SpaceLike, precision: str, device: DeviceProfile) -> bool:
    try:
        cand = extreme_candidate(space, largest=False, precision=precision)
    except HwtuneError:
        return False
    precs = list(stage_precision_of(cand).values()) or [precision]
    return all(device.supports(p) for p in precs)
