"""Export a torch module to ONNX — the one place hwtune calls ``torch.onnx.export``."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from hwtune.errors import ModelError

__all__ = ["INPUT_NAME", "OPSET", "OUTPUT_NAME", "export_onnx"]

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
# Opset 17 is understood by every ONNX Runtime release hwtune supports and by
# onnxruntime.quantization's QDQ passes.
OPSET = 17


def export_onnx(model: torch.nn.Module, example_input: torch.Tensor, path: str | Path, *, dynamic_batch: bool = True) -> Path:
    """Export ``model`` (in eval mode) to ``path`` and return the path.

    Uses the TorchScript-based exporter (``dynamo=False``): the dynamo exporter needs the extra
    ``onnxscript`` package and, for these CNNs, gives the same graph. Node names keep the module
    path (``/stages/stages.0/conv/Conv``), which is how mixed precision finds a stage's nodes.
    """
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
