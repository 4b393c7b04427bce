"""Analytical roofline latency from a device profile's spec numbers — an estimate, never a measurement.

Per layer: ``max(flops / peak_flops, bytes / bandwidth)`` with bytes = inputs read + output written +
weights read, at the layer's precision. Layers a runtime fuses into their conv (``fused_into``) and
pure views (flatten) cost nothing. No per-op overhead, no cache reuse, no efficiency factor: on real
hardware latency is typically several times this (it is a lower-bound-like figure), which is why it is
labelled ``estimated (roofline, uncalibrated)`` and calibrated predictions come from ``hwtune.predictor``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hwtune.precision import ELEMENT_BYTES

if TYPE_CHECKING:
    from hwtune.device import DeviceProfile
    from hwtune.graph import LayerInfo

__all__ = ["ROOFLINE_LABEL", "LatencyEstimate", "roofline_estimate"]

ROOFLINE_LABEL = "estimated (roofline, uncalibrated)"


@dataclass(frozen=True)
class LatencyEstimate:
    """A latency that was not measured: a calibrated prediction or an uncalibrated estimate.

    Attributes:
        latency_ms: The figure.
        source: ``predicted`` (calibrated predictor with a known error) or ``estimated``.
        label: Human label, e.g. ``estimated (roofline, uncalibrated)`` or ``predicted (±12%)``.
        error_pct: Median absolute % error of the calibration, when known.
        per_layer_ms: Per-layer figures by layer name.
        device: Profile id.
        method: ``roofline`` or the predictor's method.
    """

    latency_ms: float
    source: str
    label: str
    error_pct: float | None = None
    per_layer_ms: Mapping[str, float] = field(default_factory=dict)
    device: str = ""
    method: str = "roofline"

    def to_dict(self) -> dict[str, Any]:
        return {
            "latency_ms": self.latency_ms,
            "source": self.source,
            "label": self.label,
            "error_pct": self.error_pct,
            "device": self.device,
            "method": self.method,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyEstimate:
        return cls(
            latency_ms=float(data["latency_ms"]),
            source=str(data["source"]),
            label=str(data["label"]),
            error_pct=None if data.get("error_pct") is None else float(data["error_pct"]),
            device=str(data.get("device", "")),
            method=str(data.get("method", "roofline")),
        )


def _peak_flops(profile: DeviceProfile, precision: str) -> float:
    peaks = dict(profile.peak_gflops)
    if precision in peaks:
        return float(peaks[precision]) * 1e9
    # A precision without its own figure runs at fp32 speed (e.g. fp16 storage on a CPU without fp16 units).
    return float(peaks.get("fp32", max(peaks.values()))) * 1e9


def roofline_estimate(layers: Sequence[LayerInfo], profile: DeviceProfile) -> LatencyEstimate:
    """Roofline latency of traced ``layers`` on ``profile`` (see module docstring)."""
    bandwidth = float(profile.bandwidth_gbps) * 1e9
    per_layer: dict[str, float] = {}
    for layer in layers:
        if layer.fused_into is not None or layer.op_type == "flatten":
            per_layer[layer.name] = 0.0
            continue
        eb = ELEMENT_BYTES[layer.precision]
        read = sum(int(_prod(s)) for s in layer.input_shapes) * eb
        moved = read + layer.activation_bytes + layer.weight_bytes
        compute_s = 2.0 * layer.macs / _peak_flops(profile, layer.precision)
        memory_s = moved / bandwidth if bandwidth > 0 else 0.0
        per_layer[layer.name] = 1000.0 * max(compute_s, memory_s)
    return LatencyEstimate(
        latency_ms=float(sum(per_layer.values())),
        source="estimated",
        label=ROOFLINE_LABEL,
        per_layer_ms=per_layer,
        device=profile.id,
        method="roofline",
    )


def _prod(shape: Sequence[int]) -> int:
    out = 1
    for s in shape:
        out *= int(s)
    return out
