"""What a torch model is made of: per-layer facts, FLOPs/MACs and activation liveness.

The lowest model-facing layer of hwtune: the predictor, the profiler and the runtimes all read
models through it, and it imports none of them. ``torch`` is imported only when a function that
needs it runs, so ``import hwtune.graph`` stays light.

- :func:`trace_layers`: one forward pass -> :class:`LayerGraph` (shapes, MACs, params, weight
  bytes at a precision plan, runtime fusion, peak activation bytes).
- :func:`trace_onnx`: the same ``LayerGraph`` read from an ``.onnx`` file (op knowledge in one table,
  :data:`ONNX_OPS`); :func:`load_onnx` reads someone else's file safely.
- :func:`count_flops`: ``FlopCounterMode`` FLOPs and MACs (``macs = flops // 2``), per module.
- :func:`liveness_peak`: the buffer-liveness rule behind the activation peak (also used for ONNX graphs).
- :func:`check_input` / :func:`shape_message`: one-line errors naming the expected input shape.

Example:
    >>> import torch
    >>> from hwtune.graph import trace_layers
    >>> g = trace_layers(torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.ReLU()), torch.randn(1, 1, 8, 8))
    >>> g.total_macs, [layer.op_type for layer in g.layers]
    (2592, ['conv', 'relu'])
"""

from __future__ import annotations

from hwtune.graph._flops import FlopCount, count_flops, flop_counter
from hwtune.graph._inputs import check_input, shape_message
from hwtune.graph._layers import (
    CANONICAL_OPS,
    COMPUTE_OPS,
    FUSABLE_ACTIVATIONS,
    INT8_BIAS_BYTES,
    INT8_SCALE_BYTES,
    INT8_ZERO_POINT_BYTES,
    LayerGraph,
    LayerInfo,
    weight_storage_bytes,
)
from hwtune.graph._liveness import liveness_peak
from hwtune.graph._onnx_file import check_onnx_model, load_onnx, onnx_input_shape
from hwtune.graph._onnx_ops import ONNX_CANONICAL, ONNX_OPS, OnnxOp, OnnxTensors, compute_nodes, onnx_op
from hwtune.graph._onnx_trace import infer_tensors, trace_onnx
from hwtune.graph._ops import conv_kind, function_table, mean_kind, method_table
from hwtune.graph._torch_trace import trace_layers

__all__ = [
    "CANONICAL_OPS",
    "COMPUTE_OPS",
    "FUSABLE_ACTIVATIONS",
    "INT8_BIAS_BYTES",
    "INT8_SCALE_BYTES",
    "INT8_ZERO_POINT_BYTES",
    "ONNX_CANONICAL",
    "ONNX_OPS",
    "FlopCount",
    "LayerGraph",
    "LayerInfo",
    "OnnxOp",
    "OnnxTensors",
    "check_input",
    "check_onnx_model",
    "compute_nodes",
    "conv_kind",
    "count_flops",
    "flop_counter",
    "function_table",
    "infer_tensors",
    "liveness_peak",
    "load_onnx",
    "mean_kind",
    "method_table",
    "onnx_input_shape",
    "onnx_op",
    "shape_message",
    "trace_layers",
    "trace_onnx",
    "weight_storage_bytes",
]
