"""Reading an ONNX file someone else wrote: refused before any of its data is read if it is unsafe.

:func:`load_onnx` checks external-data locations and declared sizes (:func:`check_onnx_model`) before it
reads anything else; :func:`resolve_shape` fixes the input shape a trace runs with.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwtune._io import MAX_INPUT_ELEMENTS, MAX_MODEL_BYTES
from hwtune._util import first_line
from hwtune.errors import ConfigError, ModelError

if TYPE_CHECKING:
    import onnx

__all__ = ["check_onnx_model", "graph_input", "load_onnx", "onnx_input_shape", "resolve_shape"]


def load_onnx(path: str | Path) -> onnx.ModelProto:
    """Load an ONNX file (possibly someone else's) or raise a one-line ``ModelError`` naming it.

    The graph is read without its external data first and checked (:func:`check_onnx_model`): every
    external-data file must lie inside the model's directory, and no tensor or input may declare an
    absurd size; only then is the external data read.
    """
    import onnx
    from onnx.external_data_helper import load_external_data_for_model

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: ONNX file not found")
    try:
        size = path.stat().st_size
        if size > MAX_MODEL_BYTES:
            raise ModelError(f"{path}: refused: an ONNX file of {size} bytes (the limit is {MAX_MODEL_BYTES} bytes)")
        model = onnx.load(str(path), load_external_data=False)
    except ModelError:
        raise
    except Exception as exc:  # protobuf DecodeError, OSError, ...
        raise ModelError(f"{path}: not a readable ONNX model ({first_line(exc)})") from exc
    if not model.graph.node:
        raise ModelError(f"{path}: not a readable ONNX model (the graph has no nodes)")
    check_onnx_model(model, path)
    try:
        load_external_data_for_model(model, str(path.parent))
    except Exception as exc:
        raise ModelError(f"{path}: cannot read its external data ({first_line(exc)})") from exc
    return model


def _tensors(graph: Any) -> Iterator[Any]:
    """Every tensor a graph stores: initializers, sparse ones, node attributes, and those of subgraphs."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _tensors(attr.g)
            for g in attr.graphs:
                yield from _tensors(g)


def check_onnx_model(model: onnx.ModelProto, path: Path) -> None:
    """Refuse an untrusted ONNX graph before any of its data is read or any input allocated.

    Raises:
        ModelError: ``"<path>: refused: ..."``: an external-data location that is absolute or leaves
            the model's directory (``..``, a symlink out), a missing external file or a range past its
            end, a tensor declaring more than :data:`~hwtune._io.MAX_MODEL_BYTES`, or a graph input
            of more than :data:`~hwtune._io.MAX_INPUT_ELEMENTS` elements.
    """
    import onnx

    base = path.parent.resolve()
    for t in _tensors(model.graph):
        n = math.prod(int(d) for d in t.dims)
        try:
            itemsize = onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
        except Exception:  # noqa: BLE001 - unknown / string types: count 8 bytes an element
            itemsize = 8
        if any(int(d) < 0 for d in t.dims) or n * itemsize > MAX_MODEL_BYTES:
            raise ModelError(
                f"{path}: refused: tensor {t.name!r} declares shape {list(t.dims)} "
                f"({n * itemsize} bytes; the limit is {MAX_MODEL_BYTES} bytes)"
            )
        if t.data_location == onnx.TensorProto.EXTERNAL:
            _check_external(t, path, base)
    for inp in model.graph.input:
        dims = [d.dim_value for d in inp.type.tensor_type.shape.dim if d.HasField("dim_value")]
        if any(d < 0 for d in dims) or math.prod(dims) > MAX_INPUT_ELEMENTS:
            raise ModelError(
                f"{path}: refused: input {inp.name!r} declares shape {dims} (more than {MAX_INPUT_ELEMENTS} elements)"
            )


def _check_external(t: Any, path: Path, base: Path) -> None:
    info = {e.key: e.value for e in t.external_data}
    loc = info.get("location", "")
    where = f"{path}: refused: tensor {t.name!r} has external data at {loc!r}"
    if not loc or Path(loc).is_absolute() or loc.startswith(("/", "\\")) or ":" in loc.split("/")[0]:
        raise ModelError(f"{where}: an absolute path; expected a file next to the model")
    target = (base / loc).resolve()
    if not target.is_relative_to(base):
        raise ModelError(f"{where}: outside the model's directory {base}")
    if not target.is_file():
        raise ModelError(f"{where}: no such file next to the model")
    try:
        offset, length = int(info.get("offset") or 0), int(info.get("length") or 0)
    except ValueError as exc:
        raise ModelError(f"{where}: offset/length are not integers") from exc
    if offset < 0 or length < 0 or offset + length > target.stat().st_size:
        raise ModelError(f"{where}: bytes {offset}..{offset + length} lie past the end of the file")


def graph_input(model: onnx.ModelProto) -> Any:
    inits = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if not inputs:
        raise ModelError("ONNX model has no graph input")
    return inputs[0]


def onnx_input_shape(model: onnx.ModelProto) -> tuple[int | None, ...]:
    """Declared input shape; symbolic dims are None."""
    dims = graph_input(model).type.tensor_type.shape.dim
    return tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)


def resolve_shape(model: onnx.ModelProto, input_shape: Sequence[int] | None, src: str) -> tuple[int, ...]:
    declared = onnx_input_shape(model)
    shown = "x".join(str(d) if d is not None else "N" for d in declared)
    if input_shape is None:
        if any(d is None for d in declared[1:]):
            raise ConfigError(
                f"{src}: input shape {shown} has symbolic dims; pass the input shape (e.g. --input 1x3x224x224)"
            )
        return tuple(1 if d is None else int(d) for d in declared)
    shape = tuple(int(s) for s in input_shape)
    if math.prod(shape) > MAX_INPUT_ELEMENTS:
        raise ConfigError(f"{src}: input shape {'x'.join(map(str, shape))} has more than {MAX_INPUT_ELEMENTS} elements")
    if len(shape) != len(declared) or any(d is not None and d != s for d, s in zip(declared, shape, strict=False)):
        raise ModelError(f"{src}: model input expects shape {shown}, got {'x'.join(map(str, shape))}")
    return shape
