"""The hypervolume reference point a new study fixes once (see :mod:`hwtune.front` for the convention)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hwtune.errors import StudyError
from hwtune.front import Objective, resolve_objectives
from hwtune.tuner.config import Constraints
from hwtune.tuner.constraints import choice_supported
from hwtune.tuner.inputs import extreme_candidate, resolve_space
from hwtune.tuner.pipeline import CandidatePipeline

__all__ = ["reference_point", "reference_point_for"]


def reference_point(
    pipeline: CandidatePipeline,
    objectives: Sequence[Objective],
    constraints: Constraints,
    given: Mapping[str, float] | None,
    *,
    latency_budget_s: float,
    device: Any = None,
) -> dict[str, float]:
    """Objective figure -> reference value: the user's, the hard limit, or twice the largest candidate's."""
    ref: dict[str, float] = {}
    given = dict(given or {})
    for o in objectives:
        key = o.attr
        for alias in (o.name, o.attr):
            if alias in given:
                ref[key] = float(given[alias])
    if all(o.attr in ref for o in objectives):
        return ref
    ref.setdefault("val_accuracy", 0.0)
    limits = {
        "latency_ms": constraints.max_latency_ms,
        "peak_activation_bytes": constraints.max_ram_bytes,
        "weight_bytes": constraints.max_storage_bytes,
    }
    missing = [o.attr for o in objectives if o.attr not in ref and limits.get(o.attr) is None]
    for o in objectives:
        if o.attr not in ref and limits.get(o.attr) is not None:
            ref[o.attr] = float(limits[o.attr])  # type: ignore[arg-type]
    if missing:
        # The largest candidate at every precision the device can run: int8 is not always the
        # fastest (QDQ overhead dominates tiny models on x86), so take the worst figure of all.
        space = pipeline.space
        device = device or pipeline.device
        precs = [p for p in space.precision_choices if choice_supported(space, p, device)] or list(
            space.precision_choices
        )
        worst: dict[str, float] = {}
        last: dict[str, Any] = {}
        for prec in precs:
            cand = extreme_candidate(space, largest=True, precision=prec)
            last = pipeline.profile(
                pipeline.build(cand),
                pipeline.plan(cand),
                measure="latency_ms" in missing,
                time_budget_s=latency_budget_s,
                device=device,
            )
            for attr in missing:
                if last.get(attr) is not None:
                    worst[attr] = max(worst.get(attr, 0.0), float(last[attr]))
        for attr in missing:
            v = worst.get(attr)
            if v is None or not v > 0:
                raise StudyError(
                    f"cannot set the hypervolume reference for {attr}: the largest candidate has no {attr} "
                    f"(latency_source {last.get('latency_source')}); pass reference_point={{{attr!r}: ...}}"
                )
            # Twice the largest candidate's figure: every candidate counts, with room for noise.
            ref[attr] = 2.0 * v
    return ref


def reference_point_for(
    space_or_recipe: Any,
    *,
    device: Any = "host",
    objectives: str | Sequence[str] = ("accuracy", "latency"),
    constraints: Constraints | Mapping[str, Any] | None = None,
    latency_budget_s: float = 1.0,
) -> dict[str, float]:
    """The hypervolume reference point ``tune`` would fix for a new study (see :mod:`hwtune.front`).

    Useful to compare several studies (methods, seeds) against one reference.
    """
    from hwtune.device import load_profile

    space, _ = resolve_space(space_or_recipe)
    pipeline = CandidatePipeline(space, load_profile(device))
    return reference_point(
        pipeline,
        resolve_objectives(objectives),
        Constraints.coerce(constraints),
        None,
        latency_budget_s=latency_budget_s,
    )
