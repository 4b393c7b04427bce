"""Export a torch module to ONNX — the one place hwtune calls ``torch.onnx.export`` — and read back
the module path that the exporter encodes in each node name."""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from hwtune.errors import ModelError

if TYPE_CHECKING:
    import torch

__all__ = ["INPUT_NAME", "OPSET", "OUTPUT_NAME", "clean_node_name", "export_onnx", "onnx_node_module"]

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
# Opset 17 is understood by every ONNX Runtime release hwtune supports and by
# onnxruntime.quantization's QDQ passes.
OPSET = 17


def export_onnx(
    model: torch.nn.Module, example_input: torch.Tensor, path: str | Path, *, dynamic_batch: bool = True
) -> Path:
    """Export ``model`` (in eval mode) to ``path`` and return the path.

    Uses the TorchScript-based exporter (``dynamo=False``): the dynamo exporter needs the extra
    ``onnxscript`` package and, for these CNNs, gives the same graph. Node names keep the module
    path (``/stages/stages.0/conv/Conv``), which is how mixed precision finds a stage's nodes.
    """
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    dynamic_axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (example_input,),
                str(path),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes=dynamic_axes,
                opset_version=OPSET,
                do_constant_folding=True,
                dynamo=False,
            )
    except Exception as exc:  # torch raises many unrelated types here
        raise ModelError(f"ONNX export of {type(model).__name__} failed: {exc}") from exc
    finally:
        model.train(was_training)
    return path


# ONNX Runtime's profiler appends these to a node's name; its graph optimizer renames fused outputs.
_PROFILER_SUFFIXES = re.compile(r"(_kernel_time|_fence_before|_fence_after)$")
_ORT_RENAMES = re.compile(r"(_output_\d+)?(_nchwc)?$")


def clean_node_name(name: str) -> str:
    """Undo ONNX Runtime's suffixes: ``/a/a.b/Clip_output_0_nchwc_kernel_time`` -> ``/a/a.b/Clip``."""
    return _ORT_RENAMES.sub("", _PROFILER_SUFFIXES.sub("", name))


def onnx_node_module(node_name: str) -> str:
    """Module path encoded in a node name written by :func:`export_onnx` (the legacy exporter).

    The exporter writes one scope per module, each relative to its parent:
    ``/features/features.1/conv/conv.0/conv.0.2/Clip`` is module ``features.1.conv.0.2``
    (``conv.0.2`` under ``conv.0`` means child ``2``). Root-level nodes (``/Flatten``) and names
    without scopes give ``""``. ONNX Runtime's suffixes (``_output_0_nchwc``, ``_kernel_time``)
    are ignored, so names from its profiler decode too.

    Example:
        >>> onnx_node_module("/features/features.1/conv/conv.0/conv.0.2/Clip")
        'features.1.conv.0.2'
    """
    if not node_name.startswith("/"):
        return ""
    parts = [p for p in clean_node_name(node_name).split("/") if p != ""]
    full, prev = "", ""
    for comp in parts[:-1]:
        if prev and comp.startswith(prev + "."):
            full += comp[len(prev) :]
        else:
            full = f"{full}.{comp}" if full else comp
        prev = comp
    return full
