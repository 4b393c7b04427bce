"""Trace a model into per-layer facts: shapes, MACs, params, bytes, runtime fusion and activation liveness.

``trace_layers`` runs one batch-1 forward pass of the model through ``torch.fx`` (symbolic trace, then an
interpreter that records every node's output tensor and its FLOPs under ``FlopCounterMode``). Models fx
cannot trace (data-dependent control flow, ``*args`` tricks) fall back to forward hooks on the leaf modules
plus a dispatch-level recorder of every aten op, so liveness still sees functional ops.

Peak activation memory is a liveness analysis of the recorded tensors, see :func:`trace_layers`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hwtune._util import first_line
from hwtune.errors import ModelError
from hwtune.graph._assemble import NO_ROLES, LayerRecord, fusions, layer_infos
from hwtune.graph._flops import flop_counter
from hwtune.graph._inputs import check_input, shape_message
from hwtune.graph._layers import COMPUTE_OPS, LayerGraph, scaled_nbytes
from hwtune.graph._liveness import liveness_peak
from hwtune.graph._ops import function_op, function_table, module_op
from hwtune.precision import PrecisionPlan

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["trace_layers"]


def _tensors(value: Any) -> list[torch.Tensor]:
    import torch
    from torch.utils._pytree import tree_leaves

    if isinstance(value, torch.Tensor):
        return [value]
    try:
        return [v for v in tree_leaves(value) if isinstance(v, torch.Tensor)]
    except Exception:  # noqa: BLE001 - exotic containers: no tensors we can see
        return []


def _storage_key(t: torch.Tensor) -> int | None:
    try:
        ptr = t.untyped_storage().data_ptr()
    except Exception:  # noqa: BLE001 - tensors without storage (meta, sparse)
        return None
    return ptr or None


def _storage_bytes(t: torch.Tensor, precision: str) -> int:
    try:
        nbytes = t.untyped_storage().nbytes()
    except Exception:  # noqa: BLE001 - no storage: fall back to the logical size
        nbytes = t.numel() * t.element_size()
    numel = nbytes // max(t.element_size(), 1)
    return scaled_nbytes(numel, t.element_size(), t.is_floating_point(), precision)


def _param_roles(mod: nn.Module, op_type: str) -> dict[str, int]:
    """Split a module's parameters into quantizable weight / bias / other element counts."""
    weight = getattr(mod, "weight", None)
    bias = getattr(mod, "bias", None)
    import torch

    if op_type in COMPUTE_OPS and isinstance(weight, torch.Tensor):
        roles = {
            "weight_numel": weight.numel(),
            "out_channels": int(weight.shape[0]),
            "bias_numel": 0,
            "other_numel": 0,
        }
        if isinstance(bias, torch.Tensor):
            roles["bias_numel"] = bias.numel()
        skip = {id(weight), id(bias)}
        roles["other_numel"] = sum(p.numel() for p in mod.parameters() if id(p) not in skip)
        return roles
    return {
        "weight_numel": 0,
        "out_channels": 0,
        "bias_numel": 0,
        "other_numel": sum(p.numel() for p in mod.parameters()),
    }


def _record(*, out: Any, **kw: Any) -> LayerRecord:
    """A ``LayerRecord`` whose output is the tensor ``out`` (or None)."""
    if out is None:
        return LayerRecord(**kw, output_shape=(), out=None, out_numel=0)
    return LayerRecord(
        **kw,
        output_shape=tuple(int(s) for s in out.shape),
        out=out,
        out_numel=out.numel(),
        out_itemsize=out.element_size(),
        out_is_float=out.is_floating_point(),
    )


@dataclass
class _Trace:
    """What a tracer recorded: layers plus every activation buffer's lifetime in execution steps."""

    raws: list[LayerRecord]
    input_keys: list[int]
    buffers: dict[int, list[int]]  # storage key -> [first step, last step]
    owner: dict[int, int | None]  # storage key -> raw index whose precision sizes it (None: plan default)
    tensor: dict[int, Any]  # storage key -> a tensor of that storage (for its size)
    steps: int
    step_owner: dict[int, int | None]  # step -> raw index running
    total_macs: int
    traced_with: str


def trace_layers(model: nn.Module, example: torch.Tensor, plan: PrecisionPlan | str = "fp32") -> LayerGraph:
    """Trace ``model`` on ``example`` and return its layers and peak activation memory.

    Liveness: each activation tensor is alive from the step its producing op runs until its last
    consumer ran; the model input is alive from the start, the outputs until the end. Views, flatten,
    reshape, dropout (identity in eval) and in-place ops (``ReLU(inplace=True)``, ``out += x``) share
    their input's storage, detected from the real storages of one forward pass. Batch norm and
    relu/relu6 that runtimes fuse into the preceding conv/linear (``fused_into``) write into that
    conv's buffer. Each tensor counts at its producing layer's precision (the input at its first
    consumer's).

    ``peak_activation_bytes`` is a **lower bound** of a real allocator's peak: it ignores kernel
    workspaces (im2col, packed weights), allocator rounding and fragmentation, and frees a buffer the
    moment its last consumer finishes (a torch.fx liveness estimate measured 0.64-0.83x of the PyTorch
    CPU allocator's peak). ``peak_activation_bytes_unfused`` is the same analysis with every op
    materialising its output, as eager PyTorch runs it; it is a lower bound of the eager allocator's
    peak. Runtimes that also run element-wise ops (add) in place can go below the fused figure.

    Args:
        model: The network; switched to eval mode for the trace and restored afterwards.
        example: One input batch (batch 1 for the usual peak), e.g. ``torch.randn(1, 3, 224, 224)``.
        plan: Precision name or ``PrecisionPlan``; sets each layer's element size.

    Returns:
        A ``LayerGraph``.

    Raises:
        ModelError: If the model rejects ``example`` (the message names expected and given shape).

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.ReLU())
        >>> g = trace_layers(net, torch.randn(1, 1, 8, 8))
        >>> [(layer.op_type, layer.fused_into) for layer in g.layers]
        [('conv', None), ('relu', '0')]
    """
    import torch

    plan = PrecisionPlan.coerce(plan)
    if not isinstance(example, torch.Tensor):
        raise ModelError(f"example input must be a torch.Tensor, got {type(example).__name__}")
    was_training = model.training
    model.eval()
    notes: list[str] = []
    try:
        try:
            trace = _trace_fx(model, example)
        except ModelError:
            raise
        except Exception as exc:  # noqa: BLE001 - fx raises TraceError, TypeError, NotImplementedError, ... on dynamic models
            check_input(model, example)
            first = first_line(exc)
            notes.append(
                f"torch.fx could not trace {type(model).__name__} ({first[:160]}); used forward hooks on leaf modules"
            )
            trace = _trace_hooks(model, example)
    finally:
        model.train(was_training)
    return _assemble(model, example, plan, trace, notes)


def _trace_fx(model: nn.Module, example: torch.Tensor) -> _Trace:
    import torch
    import torch.fx

    gm = torch.fx.symbolic_trace(model)
    table = function_table()
    counter = flop_counter()
    flops: dict[Any, int] = {}

    class _Recorder(torch.fx.Interpreter):
        def run_node(self, n: Any) -> Any:
            before = counter.get_total_flops()
            out = super().run_node(n)
            flops[n] = counter.get_total_flops() - before
            return out

    # Keep every value: the tensors stay alive, so storage addresses identify aliasing exactly.
    rec = _Recorder(gm, garbage_collect_values=False)
    try:
        with torch.no_grad(), counter:
            rec.run(example)
    except Exception as exc:
        check_input(model, example)  # raises ModelError if the input is the problem
        raise RuntimeError(f"fx interpretation failed: {exc}") from exc
    values = rec.env
    modules = dict(gm.named_modules())
    param_keys = {_storage_key(p) for p in list(model.parameters()) + list(model.buffers())}
    param_keys.discard(None)

    nodes = list(gm.graph.nodes)
    tr = _Trace([], [], {}, {}, {}, len(nodes), {}, counter.get_total_flops() // 2, "fx")
    node_raw: dict[Any, int] = {}
    calls: dict[str, int] = {}
    seen_params: set[int] = set()
    placeholder_keys: dict[Any, list[int]] = {}

    for step, n in enumerate(nodes):
        val = values.get(n)
        for inp in n.all_input_nodes:  # every tensor read at this step extends its buffer's life
            for t in _tensors(values.get(inp)):
                key = _storage_key(t)
                if key in tr.buffers:
                    tr.buffers[key][1] = step
        if n.op == "placeholder":
            for t in _tensors(val):
                key = _storage_key(t)
                if key is not None and key not in tr.buffers:
                    tr.buffers[key] = [step, step]
                    tr.owner[key] = None
                    tr.tensor[key] = t
                    tr.input_keys.append(key)
                    placeholder_keys.setdefault(n, []).append(key)
            continue
        if n.op in ("output", "get_attr"):
            continue
        outs = _tensors(val)
        if not outs:
            continue  # size()/shape queries are not layers
        idx = len(tr.raws)
        for t in outs:
            key = _storage_key(t)
            if key is None or key in param_keys or key in tr.buffers:
                continue  # views and in-place results share an existing buffer
            tr.buffers[key] = [step, step]
            tr.owner[key] = idx
            tr.tensor[key] = t
        if n.op == "call_module":
            mod = modules[str(n.target)]
            base = str(n.target)
            k = calls.get(base, 0)
            calls[base] = k + 1
            name = base if k == 0 else f"{base}#{k + 1}"
            module_path = base
            op_type, geometry = module_op(mod, tuple(outs[0].shape))
            own = [p for p in mod.parameters() if id(p) not in seen_params]
            seen_params.update(id(p) for p in own)
            params = sum(p.numel() for p in own)
            roles = _param_roles(mod, op_type) if own else dict(NO_ROLES)
            target = type(mod).__name__
        else:
            stack = n.meta.get("nn_module_stack") or {}
            module_path = str(list(stack)[-1]) if stack else ""
            name = n.name
            op_type, geometry = function_op(n, table, values)
            # Parameters used functionally (F.conv2d(x, self.weight)) arrive through get_attr nodes.
            attr = [
                p
                for i in n.all_input_nodes
                if i.op == "get_attr"
                for p in [values.get(i)]
                if isinstance(p, torch.nn.Parameter) and id(p) not in seen_params
            ]
            seen_params.update(id(p) for p in attr)
            params = sum(p.numel() for p in attr)
            roles = {**NO_ROLES, "other_numel": params}
            if op_type in COMPUTE_OPS and attr:
                w = max(attr, key=lambda p: p.dim())
                rest = sum(p.numel() for p in attr if p is not w)
                roles = {
                    "weight_numel": w.numel(),
                    "out_channels": int(w.shape[0]),
                    "bias_numel": rest,
                    "other_numel": 0,
                }
            target = n.target if isinstance(n.target, str) else getattr(n.target, "__name__", str(n.target))
        tr.raws.append(
            _record(
                name=name,
                module=module_path,
                target=str(target),
                op_type=op_type,
                geometry=geometry,
                input_shapes=tuple(
                    tuple(int(s) for s in t.shape)
                    for i in n.all_input_nodes
                    if i.op != "get_attr"
                    for t in _tensors(values.get(i))
                ),
                out=outs[0],
                macs=int(flops.get(n, 0)) // 2,
                params=params,
                roles=roles,
                producers=tuple(sorted({node_raw[i] for i in n.all_input_nodes if i in node_raw})),
            )
        )
        node_raw[n] = idx
        tr.step_owner[step] = idx
    for n, idx in node_raw.items():
        tr.raws[idx].users = len(n.users)
    # The input is stored at its first consumer's precision.
    for n, keys in placeholder_keys.items():
        consumers = sorted(node_raw[u] for u in n.users if u in node_raw)
        for key in keys:
            tr.owner[key] = consumers[0] if consumers else None
    return tr


def _trace_hooks(model: nn.Module, example: torch.Tensor) -> _Trace:
    """Fallback tracer: forward hooks on leaf modules for layers, a dispatch mode over aten ops for liveness."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    counter = flop_counter()
    param_keys = {_storage_key(p) for p in list(model.parameters()) + list(model.buffers())}
    param_keys.discard(None)
    tr = _Trace([], [], {}, {}, {}, 0, {}, 0, "hooks")
    state: dict[str, Any] = {"step": 0, "current": None}
    key_raw: dict[int, int] = {}  # storage key -> raw layer that last wrote it
    calls: dict[str, int] = {}
    seen_params: set[int] = set()
    pre_flops: dict[int, int] = {}

    class _Liveness(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            state["step"] += 1
            step = state["step"]
            tr.step_owner[step] = state["current"]
            read = set()
            for t in _tensors((args, kwargs)):
                key = _storage_key(t)
                if key in tr.buffers:
                    tr.buffers[key][1] = step
                    read.add(key)
            if state["current"] is None:  # a functional op between modules consumes these layers
                for key in read:
                    if key in key_raw:
                        tr.raws[key_raw[key]].users += 1
            for t in _tensors(out):
                key = _storage_key(t)
                if key is None or key in param_keys or key in tr.buffers:
                    continue
                tr.buffers[key] = [step, step]
                tr.owner[key] = state["current"]
                tr.tensor[key] = t  # holding it also keeps its address from being reused
            return out

    def pre_hook(mod: nn.Module, args: Any) -> None:
        pre_flops[id(mod)] = counter.get_total_flops()
        state["current"] = len(tr.raws)

    def post_hook_for(name: str) -> Callable[..., None]:
        def hook(mod: nn.Module, args: Any, out: Any) -> None:
            before = pre_flops.pop(id(mod), counter.get_total_flops())
            outs, ins = _tensors(out), _tensors(args)
            k = calls.get(name, 0)
            calls[name] = k + 1
            op_type, geometry = module_op(mod, tuple(outs[0].shape) if outs else ())
            own = [p for p in mod.parameters() if id(p) not in seen_params]
            seen_params.update(id(p) for p in own)
            producers = tuple(sorted({key_raw[key] for t in ins if (key := _storage_key(t)) in key_raw}))
            idx = len(tr.raws)
            tr.raws.append(
                _record(
                    name=name if k == 0 else f"{name}#{k + 1}",
                    module=name,
                    target=type(mod).__name__,
                    op_type=op_type,
                    geometry=geometry,
                    input_shapes=tuple(tuple(int(s) for s in t.shape) for t in ins),
                    out=outs[0] if outs else None,
                    macs=(counter.get_total_flops() - before) // 2,
                    params=sum(p.numel() for p in own),
                    roles=_param_roles(mod, op_type) if own else dict(NO_ROLES),
                    producers=producers,
                )
            )
            for p in producers:
                tr.raws[p].users += 1
            for t in outs:
                key = _storage_key(t)
                if key is not None:
                    key_raw[key] = idx  # in-place results: later readers consume this layer
            for key in tr.input_keys:
                if tr.owner.get(key) is None and any(_storage_key(t) == key for t in ins):
                    tr.owner[key] = idx
            state["current"] = None

        return hook

    handles = []
    for name, mod in model.named_modules():
        if mod is model or list(mod.children()):
            continue
        handles.append(mod.register_forward_pre_hook(pre_hook))
        handles.append(mod.register_forward_hook(post_hook_for(name)))
    input_key = _storage_key(example)
    if input_key is not None:
        tr.buffers[input_key] = [0, 0]
        tr.owner[input_key] = None
        tr.tensor[input_key] = example
        tr.input_keys.append(input_key)
    try:
        with torch.no_grad(), counter, _Liveness():
            out = model(example)
    except Exception as exc:
        raise ModelError(shape_message(model, tuple(example.shape), exc)) from exc
    finally:
        for h in handles:
            h.remove()
    end = state["step"] + 1
    for t in _tensors(out):
        key = _storage_key(t)
        if key in tr.buffers:
            tr.buffers[key][1] = end
        if key in key_raw:
            tr.raws[key_raw[key]].users += 1
    tr.steps = end + 1
    tr.total_macs = counter.get_total_flops() // 2
    return tr


def _assemble(model: nn.Module, example: torch.Tensor, plan: PrecisionPlan, tr: _Trace, notes: list[str]) -> LayerGraph:
    raws = tr.raws
    precisions = [plan.for_module(r.module) for r in raws]
    fused = fusions(raws)
    name_idx = {r.name: i for i, r in enumerate(raws)}

    sized: dict[int, tuple[int, int, int]] = {}
    for key, (first, last) in tr.buffers.items():
        owner = tr.owner.get(key)
        prec = precisions[owner] if owner is not None else plan.default
        t = tr.tensor.get(key)
        sized[key] = (_storage_bytes(t, prec) if t is not None else 0, first, last)
    input_bytes = sum(sized[k][0] for k in tr.input_keys if k in sized)

    merges: dict[int, int] = {}
    for r, into in zip(raws, fused, strict=True):
        if into is None or r.out is None:
            continue
        out_key = _storage_key(r.out)
        target = raws[name_idx[into]].out
        tkey = _storage_key(target) if target is not None else None
        if out_key is not None and tkey is not None and out_key != tkey:
            merges[out_key] = tkey
    peak_fused, peak_step = liveness_peak(sized, merges, tr.steps)
    peak_unfused, _ = liveness_peak(sized, None, tr.steps)

    layers = layer_infos(raws, precisions, fused)
    peak_layer = ""
    for s in range(peak_step, -1, -1):
        owner = tr.step_owner.get(s)
        if owner is not None:
            peak_layer = raws[owner].name
            break
    return LayerGraph(
        layers=tuple(layers),
        input_shape=tuple(int(s) for s in example.shape),
        peak_activation_bytes=int(peak_fused),
        peak_activation_bytes_unfused=int(peak_unfused),
        peak_layer=peak_layer,
        input_bytes=int(input_bytes),
        total_macs=int(tr.total_macs),
        total_params=int(sum(p.numel() for p in model.parameters())),
        total_weight_bytes=int(sum(layer.weight_bytes for layer in layers)),
        traced_with=tr.traced_with,
        notes=tuple(notes),
    )
