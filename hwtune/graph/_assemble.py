"""What both tracers share once they have recorded a model's ops: runtime fusion and ``LayerInfo`` assembly.

The torch tracer (:mod:`hwtune.graph._torch_trace`) and the ONNX reader (:mod:`hwtune.graph._onnx_trace`)
each turn a model into :class:`LayerRecord` s (op type, geometry, MACs, parameter roles, producers);
from there the rules are the same: which bn/relu a runtime fuses into its conv (:func:`fusions`) and
how a record becomes a :class:`~hwtune.graph.LayerInfo` at its precision (:func:`layer_infos`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hwtune.graph._layers import (
    COMPUTE_OPS,
    FUSABLE_ACTIVATIONS,
    INT8_BIAS_BYTES,
    LayerInfo,
    scaled_nbytes,
    weight_storage_bytes,
)

__all__ = ["NO_ROLES", "LayerRecord", "fusions", "layer_infos"]

# Parameter element counts by role (see weight_storage_bytes): a layer without parameters.
NO_ROLES = {"weight_numel": 0, "out_channels": 0, "bias_numel": 0, "other_numel": 0}


@dataclass
class LayerRecord:
    """One op as a tracer recorded it, before precision and byte accounting.

    ``out`` is the tracer's handle on the output (a tensor, an ONNX tensor name); ``out_numel``,
    ``out_itemsize`` and ``out_is_float`` size it at any precision.
    """

    name: str
    module: str
    target: str
    op_type: str
    geometry: dict[str, Any]
    input_shapes: tuple[tuple[int, ...], ...]
    output_shape: tuple[int, ...]
    macs: int
    params: int
    roles: dict[str, int]
    producers: tuple[int, ...]  # record indices whose outputs this op reads
    out: Any = None
    out_numel: int = 0
    out_itemsize: int = 4
    out_is_float: bool = True
    users: int = 0  # consumers of the output (ops, functional ops, the graph output)


def fusions(records: Sequence[LayerRecord]) -> list[str | None]:
    """``fused_into`` per op: bn after a conv/linear that only it reads; relu/relu6 after such a conv or fused bn."""
    fused: list[str | None] = [None] * len(records)
    for i, r in enumerate(records):
        if len(r.producers) != 1:
            continue
        p = r.producers[0]
        prod = records[p]
        if prod.users != 1:
            continue  # the intermediate is read elsewhere, so the runtime must materialise it
        if r.op_type == "bn" and prod.op_type in COMPUTE_OPS:
            fused[i] = prod.name
        elif r.op_type in FUSABLE_ACTIVATIONS:
            if prod.op_type in COMPUTE_OPS:
                fused[i] = prod.name
            elif prod.op_type == "bn" and fused[p] is not None:
                fused[i] = fused[p]
    return fused


def layer_infos(
    records: Sequence[LayerRecord],
    precisions: Sequence[str],
    fused: Sequence[str | None],
    *,
    with_producers: bool = True,
) -> list[LayerInfo]:
    """The ``LayerInfo`` of each record at its precision.

    Channel counts default to dim 1 of 4-d tensors; a bn folded into an int8 conv becomes its int32
    bias (C values, not 2C floats). ``with_producers=False`` leaves ``producers`` empty (graphs read
    from ONNX have always listed none).
    """
    layers: list[LayerInfo] = []
    for r, prec, into in zip(records, precisions, fused, strict=True):
        geometry = dict(r.geometry)
        if len(r.output_shape) == 4:
            geometry.setdefault("out_channels", int(r.output_shape[1]))
            if r.input_shapes and len(r.input_shapes[0]) == 4:
                geometry.setdefault("in_channels", int(r.input_shapes[0][1]))
        if into is not None and r.op_type == "bn" and prec == "int8" and r.params:
            wbytes = int(geometry.get("out_channels") or 0) * INT8_BIAS_BYTES
        else:
            wbytes = weight_storage_bytes(prec, **r.roles)
        layers.append(
            LayerInfo(
                name=r.name,
                op_type=r.op_type,
                input_shapes=r.input_shapes,
                output_shape=r.output_shape,
                macs=int(r.macs),
                params=int(r.params),
                precision=prec,
                activation_bytes=scaled_nbytes(r.out_numel, r.out_itemsize, r.out_is_float, prec),
                weight_bytes=int(wbytes),
                kernel_size=geometry.get("kernel_size"),
                stride=geometry.get("stride"),
                groups=int(geometry.get("groups", 1)),
                in_channels=geometry.get("in_channels"),
                out_channels=geometry.get("out_channels"),
                fused_into=into,
                module=r.module,
                target=r.target,
                producers=tuple(records[p].name for p in r.producers) if with_producers else (),
            )
        )
    return layers
