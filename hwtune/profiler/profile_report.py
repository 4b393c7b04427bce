"""``ProfileReport``: everything ``profile_model`` found, as a frozen value object with a JSON form."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hwtune.graph import LayerInfo
from hwtune.profiler.roofline import LatencyEstimate
from hwtune.runtimes import LatencyMeasurement

__all__ = ["LATENCY_SOURCES", "SCHEMA_VERSION", "Fits", "ProfileReport"]

SCHEMA_VERSION = 1
# How a latency figure was obtained. Only "measured" comes from running the model on this machine.
LATENCY_SOURCES = ("measured", "predicted", "estimated", "unavailable")


# How the working memory figure was obtained.
LIVENESS_SOURCE = "estimated (liveness, lower bound)"


@dataclass(frozen=True)
class Fits:
    """Whether the model fits the device: weights in storage, peak activations in working memory.

    Attributes:
        weights: ``weight_bytes <= storage_bytes``.
        activations: ``peak_activation_bytes <= ram_bytes``.
        overall: Both.
        weight_bytes, storage_bytes, peak_activation_bytes, ram_bytes: The figures compared.
    """

    weights: bool
    activations: bool
    overall: bool
    weight_bytes: int
    storage_bytes: int
    peak_activation_bytes: int
    ram_bytes: int

    @classmethod
    def check(cls, weight_bytes: int, peak_activation_bytes: int, *, storage_bytes: int, ram_bytes: int) -> Fits:
        w = weight_bytes <= storage_bytes
        a = peak_activation_bytes <= ram_bytes
        return cls(w, a, w and a, int(weight_bytes), int(storage_bytes), int(peak_activation_bytes), int(ram_bytes))

    @property
    def storage_used_pct(self) -> float:
        return 100.0 * self.weight_bytes / self.storage_bytes if self.storage_bytes else math.inf

    @property
    def ram_used_pct(self) -> float:
        return 100.0 * self.peak_activation_bytes / self.ram_bytes if self.ram_bytes else math.inf

    def to_dict(self) -> dict[str, Any]:
        return {
            "weights": self.weights,
            "activations": self.activations,
            "overall": self.overall,
            "weight_bytes": self.weight_bytes,
            "storage_bytes": self.storage_bytes,
            "peak_activation_bytes": self.peak_activation_bytes,
            "ram_bytes": self.ram_bytes,
            "storage_used_pct": round(self.storage_used_pct, 4),
            "ram_used_pct": round(self.ram_used_pct, 4),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Fits:
        return cls(
            bool(data["weights"]),
            bool(data["activations"]),
            bool(data["overall"]),
            int(data["weight_bytes"]),
            int(data["storage_bytes"]),
            int(data["peak_activation_bytes"]),
            int(data["ram_bytes"]),
        )


@dataclass(frozen=True)
class ProfileReport:
    """What a model costs on a device.

    Attributes:
        model: Model name (class name, ``torchvision:<builder>`` or the ONNX path).
        input_shape: The input shape profiled (batch first).
        device: Profile id.
        precision: Precision label (``fp32``, ``int8``, ``mixed(int8; fp32: stem)``).
        runtime: Runtime the latency refers to (measured on, or predicted for).
        macs: Multiply-accumulates of one forward pass; ``flops = 2 * macs``.
        flops: ``2 * macs``.
        params: Parameters (for an ONNX file: those stored in it, BN already folded).
        weight_bytes: Parameter storage at the precision (int8 includes per-channel scales and zero points).
        peak_activation_bytes: Liveness peak with runtime fusion (a lower bound of the real peak).
        peak_activation_bytes_unfused: The same, every op materialising its output (eager).
        latency_ms: The latency figure, or None when ``latency_source == "unavailable"``.
        latency_source: ``measured``, ``predicted``, ``estimated`` or ``unavailable``.
        latency_label: Human label saying how the figure was obtained (never "measured" unless it was).
        latency: The full measurement or estimate, or None.
        fits: Storage / working-memory check against the device.
        layers: Per-layer facts (empty when not requested).
        layer_times_ms: Per-layer times by layer name (measured per op, or predicted/estimated per layer).
        layer_times_source: How ``layer_times_ms`` was obtained (same vocabulary as ``latency_source``).
        notes: Caveats (random int8 calibration, fallbacks, precision not supported, ...).
        traced_with: ``fx``, ``hooks`` or ``onnx``.
        profile_seconds: Wall time ``profile_model`` took.
        shipped: The deployable file the working memory was measured on, when ``profile_model`` was asked to
            keep it (``ship_to``); not part of the report's dict.
    """

    model: str
    input_shape: tuple[int, ...]
    device: str
    precision: str
    runtime: str
    macs: int
    flops: int
    params: int
    weight_bytes: int
    peak_activation_bytes: int
    peak_activation_bytes_unfused: int
    latency_ms: float | None
    latency_source: str
    latency_label: str
    latency: LatencyMeasurement | LatencyEstimate | None
    fits: Fits
    layers: tuple[LayerInfo, ...] = ()
    layer_times_ms: Mapping[str, float] = field(default_factory=dict)
    layer_times_source: str = "unavailable"
    notes: tuple[str, ...] = ()
    traced_with: str = "fx"
    profile_seconds: float = 0.0
    working_memory_bytes: int | None = None
    working_memory_source: str = LIVENESS_SOURCE
    storage_bytes: int | None = None
    schema_version: int = SCHEMA_VERSION
    shipped: Any = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        # The one invariant that matters most: nothing but a measurement may call itself measured.
        if self.latency_source not in LATENCY_SOURCES:
            raise ValueError(f"latency_source must be one of {', '.join(LATENCY_SOURCES)}, got {self.latency_source!r}")
        if (self.latency_source == "measured") != isinstance(self.latency, LatencyMeasurement):
            raise ValueError("latency_source 'measured' requires a LatencyMeasurement and vice versa")
        if self.latency_source == "unavailable" and self.latency_ms is not None:
            raise ValueError("an unavailable latency has no latency_ms")

    @property
    def measured(self) -> bool:
        return self.latency_source == "measured"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; ``layers`` rows carry ``time_ms`` (None where no per-layer time exists)."""
        if self.latency is None:
            latency: dict[str, Any] = {"source": self.latency_source, "label": self.latency_label, "latency_ms": None}
        else:
            latency = self.latency.to_dict()
            latency["label"] = self.latency_label
        layers = []
        for layer in self.layers:
            row = layer.to_dict()
            row["time_ms"] = self.layer_times_ms.get(layer.name)
            layers.append(row)
        return {
            "schema_version": self.schema_version,
            "model": self.model,
            "input_shape": list(self.input_shape),
            "device": self.device,
            "precision": self.precision,
            "runtime": self.runtime,
            "macs": self.macs,
            "flops": self.flops,
            "params": self.params,
            "weight_bytes": self.weight_bytes,
            "peak_activation_bytes": self.peak_activation_bytes,
            "peak_activation_bytes_unfused": self.peak_activation_bytes_unfused,
            "latency_ms": self.latency_ms,
            "latency_source": self.latency_source,
            "latency_label": self.latency_label,
            "latency": latency,
            "fits": self.fits.to_dict(),
            "layers": layers,
            "layer_times_source": self.layer_times_source,
            "notes": list(self.notes),
            "traced_with": self.traced_with,
            "profile_seconds": round(self.profile_seconds, 4),
            "working_memory_bytes": (
                self.peak_activation_bytes if self.working_memory_bytes is None else self.working_memory_bytes
            ),
            "working_memory_source": self.working_memory_source,
            "storage_bytes": self.storage_bytes,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProfileReport:
        source = str(data["latency_source"])
        lat = data.get("latency")
        latency: LatencyMeasurement | LatencyEstimate | None = None
        if source == "measured" and lat:
            latency = LatencyMeasurement.from_dict(lat)
        elif source in ("predicted", "estimated") and lat:
            latency = LatencyEstimate.from_dict(lat)
        rows = list(data.get("layers", ()))
        times = {str(r["name"]): float(r["time_ms"]) for r in rows if r.get("time_ms") is not None}
        return cls(
            model=str(data["model"]),
            input_shape=tuple(int(s) for s in data["input_shape"]),
            device=str(data["device"]),
            precision=str(data["precision"]),
            runtime=str(data["runtime"]),
            macs=int(data["macs"]),
            flops=int(data["flops"]),
            params=int(data["params"]),
            weight_bytes=int(data["weight_bytes"]),
            peak_activation_bytes=int(data["peak_activation_bytes"]),
            peak_activation_bytes_unfused=int(data.get("peak_activation_bytes_unfused", data["peak_activation_bytes"])),
            latency_ms=None if data.get("latency_ms") is None else float(data["latency_ms"]),
            latency_source=source,
            latency_label=str(data.get("latency_label", "")),
            latency=latency,
            fits=Fits.from_dict(data["fits"]),
            layers=tuple(LayerInfo.from_dict(r) for r in rows),
            layer_times_ms=times,
            layer_times_source=str(data.get("layer_times_source", "unavailable")),
            notes=tuple(str(n) for n in data.get("notes", ())),
            traced_with=str(data.get("traced_with", "fx")),
            profile_seconds=float(data.get("profile_seconds", 0.0)),
            working_memory_bytes=None if data.get("working_memory_bytes") is None else int(data["working_memory_bytes"]),
            working_memory_source=str(data.get("working_memory_source", LIVENESS_SOURCE)),
            storage_bytes=None if data.get("storage_bytes") is None else int(data["storage_bytes"]),
            schema_version=int(data.get("schema_version", SCHEMA_VERSION)),
        )
