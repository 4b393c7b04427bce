"""Lower a model to ``RawLayer``s from its module tree, without tracing the model.

``trace_layers`` (torch.fx + ``FlopCounterMode`` over a real forward pass) costs 20-2,000 ms per
model; a search predicts thousands of new candidates. This module gets the same ``RawLayer`` list
from structure alone:

* **leaf torch modules** (conv, linear, BN, activations, pools, flatten, dropout ...) are computed
  from their hyperparameters and the input shape: output shape, MACs (what ``FlopCounterMode``
  counts: conv ``N x Cout x out pixels x Cin/groups x kernel area``, linear ``rows x in x out``),
  weight bytes (the profiler's storage rule);
* **``nn.Sequential``** (and subclasses that keep its ``forward``) run their children in order;
* **other modules** run their ``forward`` as a *wiring template*: ``torch.fx`` records the forward
  once per (class, plain attributes, child names) with every submodule kept opaque, and the
  template is replayed with shapes (element-wise ops, concatenation, flatten/view, global pooling,
  ``zeros_like``); a template is shared by every instance with the same wiring, so a new
  candidate of a known family costs no fx call at all;
* **cells whose wiring lives in data** (a NAS-Bench-201 cell keeps its edges in a list) offer the family
  hook ``wiring()`` (:class:`hwtune.families.WiredCell`) and are lowered from it -- see ``_wired_cell``;
* anything else (an op the replay does not know, parameters used functionally, dynamic control
  flow) is traced once per (structure, input shape, precision) with the profiler's tracer through
  the ``trace_unit`` callback and spliced in, so the answer never depends on what this module
  knows -- only the cost does.

Names follow the profiler's: module path (``#k`` from the k-th call on), and for functional ops
the name ``torch.fx`` gives the node in a whole-model trace (``add``, ``add_1`` ...), so per-layer
figures line up with ``profile_model``'s layers. ``tests/predictor/test_structure.py`` checks the
result equals the traced lowering on random candidates of every family.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from hwtune.graph import conv_kind, mean_kind
from hwtune.precision import PrecisionPlan
from hwtune.predictor._features import CONSTANT_TARGETS, RawLayer, weight_bytes

__all__ = ["StructureUnsupported", "TraceUnit", "module_attrs", "raws_from_structure", "template_count"]

# (module, input shape, plan) -> RawLayer list of that module alone, from the profiler's tracer
TraceUnit = Callable[[Any, tuple[int, ...], PrecisionPlan], list[RawLayer]]

_SIMPLE = (str, int, float, bool, type(None))
_NOT_SIMPLE = object()
_TORCH_STATE = frozenset({
    "training", "_parameters", "_buffers", "_non_persistent_buffers_set", "_backward_pre_hooks", "_backward_hooks",
    "_is_full_backward_hook", "_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called",
    "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_state_dict_hooks", "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks", "_modules", "_compiled_call_impl",
})
_CLASS_ATTRS: dict[type, tuple[str, ...] | None] = {}


class StructureUnsupported(Exception):
    """This module cannot be lowered from structure (the caller traces it instead)."""


def _freeze(v: Any, depth: int = 0) -> Any:
    """A hashable copy of a plain-Python value, or ``_NOT_SIMPLE``."""
    if type(v) in _SIMPLE:
        return v
    if type(v) in (tuple, list) and depth < 4:
        out = tuple(_freeze(x, depth + 1) for x in v)
        return _NOT_SIMPLE if _NOT_SIMPLE in out else out
    return _NOT_SIMPLE


def _class_attrs(cls: type) -> tuple[str, ...] | None:
    try:
        return _CLASS_ATTRS[cls]
    except KeyError:
        pass
    attrs = None
    constants = getattr(cls, "__constants__", None)
    declared = getattr(cls, "forward_attrs", None)  # the family hook: plain attributes forward reads
    if cls.__module__.startswith("torch.nn.") and isinstance(constants, (list, tuple)):
        attrs = tuple(sorted(str(a) for a in constants))
    elif isinstance(declared, tuple):
        attrs = tuple(str(a) for a in declared)
    _CLASS_ATTRS[cls] = attrs
    return attrs


def module_attrs(mod: Any) -> tuple[Any, ...]:
    """The hyperparameters of one module that can change what its forward computes.

    Built-in torch modules: the attributes their class declares in ``__constants__`` (channels,
    kernel, stride ...); classes that declare ``forward_attrs`` (a family hook: the plain attributes
    their forward reads): those; other classes: every plain attribute of their ``__dict__`` (wiring
    kept in plain lists, such as a NAS cell's edges). Values that cannot be frozen are left out.
    """
    d = mod.__dict__
    names = _class_attrs(type(mod))
    if names is not None:
        return tuple(map(d.get, names))
    out = []
    for k, v in d.items():
        if type(v) in _SIMPLE:
            out.append((k, v))
        elif k not in _TORCH_STATE:
            f = _freeze(v)
            if f is not _NOT_SIMPLE:
                out.append((k, f))
    return tuple(out)


# --------------------------------------------------------------------------------------------
# Values flowing through the replay


@dataclass(frozen=True)
class _T:
    """A tensor: its shape and the raw layer that produced it (-1: the graph input)."""

    shape: tuple[int, ...]
    src: int


def _tensors(value: Any) -> list[_T]:
    if isinstance(value, _T):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    return []


def _pair(v: Any) -> tuple[int, int]:
    t = (v, v) if isinstance(v, int) else tuple(int(x) for x in v)
    return (t[0], 1) if len(t) == 1 else (t[-2], t[-1])


def _window_out(size: int, k: int, s: int, p: int, d: int, ceil: bool) -> int:
    span = size + 2 * p - d * (k - 1) - 1
    if ceil:
        out = -(-span // s) + 1
        if (out - 1) * s >= size + p:  # the last window must start inside the input (torch's rule)
            out -= 1
        return out
    return span // s + 1


def _broadcast(shapes: Sequence[tuple[int, ...]]) -> tuple[int, ...]:
    if len(shapes) == 2 and shapes[0] == shapes[1]:
        return tuple(shapes[0])
    n = max(len(s) for s in shapes)
    out = []
    for i in range(n):
        dims = {s[i - n + len(s)] for s in shapes if i - n + len(s) >= 0} - {1}
        if len(dims) > 1:
            raise StructureUnsupported(f"shapes {shapes} do not broadcast")
        out.append(dims.pop() if dims else 1)
    return tuple(out)


_NAME_RE = re.compile(r"^(.*?)(?:_(\d+))?$")
_ILLEGAL = re.compile(r"[^0-9a-zA-Z_]+")
_CAMEL = re.compile(r"(?<=[a-z])([A-Z])")  # torch.fx._snake_case


_CANDIDATES: dict[str, tuple[str, str, str | None]] = {}


class _Namespace:
    """The names ``torch.fx`` gives nodes (``add``, ``add_1`` ...), replayed in execution order."""

    def __init__(self) -> None:
        self.used: set[str] = set()
        self.count: dict[str, int] = {}

    def create(self, candidate: str) -> str:
        try:
            candidate, base, num_text = _CANDIDATES[candidate]
        except KeyError:
            raw = candidate
            candidate = _ILLEGAL.sub("_", _CAMEL.sub(r"_\1", candidate).lower()) or "_unnamed"
            if candidate[0].isdigit():
                candidate = "_" + candidate
            m = _NAME_RE.match(candidate)
            assert m is not None
            base, num_text = m.group(1), m.group(2)
            _CANDIDATES[raw] = (candidate, base, num_text)
        if num_text is None or candidate in self.used:
            num = self.count.get(base, 0)
        else:
            num = int(num_text)
        while candidate in self.used:
            num += 1
            candidate = f"{base}_{num}"
        self.used.add(candidate)
        self.count[base] = num
        return candidate


# --------------------------------------------------------------------------------------------
# The replay


class _Lowerer:
    """Walks a model, appending one record per layer; ``finish`` turns them into ``RawLayer``s."""

    def __init__(self, plan: PrecisionPlan, trace_unit: TraceUnit | None) -> None:
        self.plan = plan
        self.trace_unit = trace_unit
        # per layer: [name, op_type, precision, input_shapes, output_shape, macs, wbytes, kernel,
        #             producers, constant, identity, module-weight-roles-owner]
        self.rows: list[list[Any]] = []
        self.calls: dict[str, int] = {}
        self.names = _Namespace()
        self.names.create("x")  # the forward's input placeholder
        self.seen: set[int] = set()
        # structure key of a wired cell -> (first row, end row, input, output, path) of its first lowering
        self.cells: dict[Any, tuple[int, int, _T, _T, str]] = {}

    # -- records ---------------------------------------------------------------------------
    def add(self, name: str, op_type: str, precision: str, inputs: Sequence[_T], out: tuple[int, ...], *,
            macs: int = 0, wbytes: int = 0, kernel: tuple[int, int] | None = None, constant: bool = False,
            identity: bool = False) -> _T:
        prods = (inputs[0].src,) if len(inputs) == 1 else tuple(sorted({t.src for t in inputs}))
        self.rows.append([name, op_type, precision, tuple(t.shape for t in _unique(inputs)), out, int(macs),
                          int(wbytes), kernel, prods, constant, identity])
        return _T(out, len(self.rows) - 1)

    def copy_rows(self, first: tuple[int, int, _T, _T, str], where: str, x: _T) -> _T:
        """Append a copy of the rows ``first`` recorded for an identical module at another path.

        ``first`` = (first row, end row, its input, its output, its path). Module rows move to
        ``where`` (and count as calls there), functional rows take the next fx names.
        """
        start, end, x_in, x_out, old = first
        offset = len(self.rows) - start
        prefix = old + "."
        for r in self.rows[start:end]:
            name = r[0]
            if name.startswith(prefix):
                name = self.module_name(where + name[len(old):])
            else:
                m = _NAME_RE.match(name)
                name = self.names.create(m.group(1) if m else name)
            prods = tuple(sorted({x.src if p == x_in.src else (p + offset if p >= start else p) for p in r[8]}))
            self.rows.append([name, *r[1:8], prods, r[9], r[10]])
        if x_out.src == x_in.src:
            return x
        return _T(x_out.shape, x_out.src + offset)

    def module_name(self, path: str) -> str:
        self.names.create(path.replace(".", "_"))
        k = self.calls.get(path, 0)
        self.calls[path] = k + 1
        return path if k == 0 else f"{path}#{k + 1}"

    # -- modules ---------------------------------------------------------------------------
    def module(self, mod: Any, path: str, args: Sequence[Any]) -> Any:
        cls = type(mod)
        if _is_wired(cls):
            return _wired_cell(self, mod, path, args)
        if cls.forward is _sequential_forward():
            if len(args) != 1:
                raise StructureUnsupported(f"{path}: Sequential called with {len(args)} inputs")
            x = args[0]
            for name, child in mod._modules.items():
                if child is not None:
                    x = self.module(child, _join(path, name), [x])
            return x
        if cls.__module__.startswith("torch.nn."):
            out = _leaf(self, mod, path, args)
            if out is not None:
                return out
            return self.unit(mod, path, args)
        try:
            return self.replay(mod, path, args)
        except StructureUnsupported:
            return self.unit(mod, path, args)

    def unit(self, mod: Any, path: str, args: Sequence[Any]) -> Any:
        """Trace one module on its own (cached by the caller's ``trace_unit``) and splice it in."""
        if self.trace_unit is None or len(args) != 1 or not isinstance(args[0], _T):
            raise StructureUnsupported(f"{path or type(mod).__name__}: cannot lower without tracing")
        x = args[0]
        prefix = path + "." if path else ""
        overrides = tuple((p[len(prefix):], q) for p, q in self.plan.overrides if prefix and p.startswith(prefix))
        sub_plan = PrecisionPlan(self.plan.for_module(path), overrides)
        raws = self.trace_unit(mod, x.shape, sub_plan)
        base = len(self.rows)
        for r in raws:
            prods = tuple(sorted({base + p if p >= 0 else x.src for p in r.producers}))
            name = prefix + r.name if r.name and not r.name.startswith(prefix) else r.name
            self.rows.append([name, r.op_type, r.precision, r.input_shapes, r.output_shape, r.macs, r.weight_bytes,
                              r.kernel_size, prods, r.constant, r.identity])
        if not raws:
            return x
        return _T(tuple(raws[-1].output_shape), len(self.rows) - 1)

    def replay(self, mod: Any, path: str, args: Sequence[Any]) -> Any:
        graph = _template(mod)
        env: dict[Any, Any] = {}
        it = iter(args)
        for n in graph.nodes:
            if n.op == "placeholder":
                try:
                    env[n] = next(it)
                except StopIteration:
                    raise StructureUnsupported(f"{path}: forward takes more inputs than given") from None
            elif n.op == "output":
                return _load(env, n.args[0])
            elif n.op == "call_module":
                sub_args = _load(env, n.args)
                if n.kwargs:
                    raise StructureUnsupported(f"{path}.{n.target}: called with keyword arguments")
                env[n] = self.module(mod.get_submodule(n.target), _join(path, str(n.target)), sub_args)
            elif n.op in ("call_function", "call_method"):
                env[n] = _function(self, n, _load(env, n.args), _load(env, n.kwargs), path)
            else:  # get_attr: parameters used functionally
                raise StructureUnsupported(f"{path}: reads {n.target} as a tensor")
        raise StructureUnsupported(f"{path}: forward has no output")

    # -- the result ------------------------------------------------------------------------
    def finish(self, prune: bool) -> list[RawLayer]:
        rows = self.rows
        n = len(rows)
        users = [0] * n
        for r in rows:
            for p in r[8]:
                if p >= 0:
                    users[p] += 1
        if n:
            users[-1] += 1
        for r in rows:  # BN folded into an int8 conv becomes its int32 bias (the profiler's rule)
            p = r[8]
            if r[1] == "bn" and r[2] == "int8" and len(p) == 1 and p[0] >= 0 and users[p[0]] == 1 \
                    and rows[p[0]][1] in ("conv", "dwconv", "pwconv", "linear") and r[6]:
                r[6] = int(r[4][1]) * 4 if len(r[4]) > 1 else r[6]
        live = [True] * n
        if prune and n:  # what does not feed the last layer is pruned by exporters (see _dead_ops)
            live = [False] * n
            live[-1] = True
            for i in range(n - 1, -1, -1):
                if live[i]:
                    for p in rows[i][8]:
                        if p >= 0:
                            live[p] = True
        index = [-1] * n
        out: list[RawLayer] = []
        for old in range(n):
            if not live[old]:
                continue
            index[old] = len(out)
            r = rows[old]
            prods = r[8]
            if len(prods) == 1:
                p = prods[0]
                prods = (index[p] if p >= 0 else p,)
            else:
                prods = tuple(sorted({index[p] if p >= 0 else p for p in prods}))
            out.append(RawLayer(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], prods, r[9], r[10]))
        return out


_SEQ_FORWARD: list[Any] = []


def _sequential_forward() -> Any:
    if not _SEQ_FORWARD:
        from torch import nn

        _SEQ_FORWARD.append(nn.Sequential.forward)
    return _SEQ_FORWARD[0]


def _unique(inputs: Sequence[_T]) -> Sequence[_T]:
    if len(inputs) == 1:
        return inputs
    seen: list[_T] = []
    for t in inputs:
        if not any(t is s for s in seen):
            seen.append(t)
    return seen


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _load(env: dict[Any, Any], value: Any) -> Any:
    import torch.fx

    if isinstance(value, torch.fx.Node):
        return env[value]
    if isinstance(value, (list, tuple)):
        return type(value)(_load(env, v) for v in value)
    if isinstance(value, dict):
        return {k: _load(env, v) for k, v in value.items()}
    return value


# --------------------------------------------------------------------------------------------
# Wiring templates

_TEMPLATES: dict[Any, Any] = {}


def template_count() -> int:
    """How many wiring templates were recorded with ``torch.fx`` in this process (for tests)."""
    return len(_TEMPLATES)


def _template(mod: Any) -> Any:
    """The fx graph of ``mod.forward`` with every submodule opaque, shared by identical wirings."""
    attrs = module_attrs(mod)
    key = (type(mod), attrs, tuple((k, v is None) for k, v in mod._modules.items()))
    try:
        hit = _TEMPLATES.get(key)
    except TypeError:  # an unhashable attribute
        raise StructureUnsupported(f"{type(mod).__name__}: unhashable attributes") from None
    if hit is not None:
        if isinstance(hit, StructureUnsupported):
            raise hit
        return hit
    import torch.fx

    class _Opaque(torch.fx.Tracer):
        def is_leaf_module(self, m: Any, qualname: str) -> bool:
            return True

    try:
        graph = _Opaque().trace(mod)
    except Exception as exc:
        err = StructureUnsupported(f"{type(mod).__name__}: torch.fx cannot record its forward ({exc})")
        _TEMPLATES[key] = err
        raise err from exc
    _TEMPLATES[key] = graph
    return graph


# --------------------------------------------------------------------------------------------
# Leaf modules

_ELEMENTWISE_MODULES = {"ReLU": "relu", "ReLU6": "relu6", "Hardswish": "hardswish", "Sigmoid": "sigmoid",
                        "SiLU": "other", "GELU": "other", "Tanh": "other", "LeakyReLU": "other", "ELU": "other",
                        "Hardsigmoid": "other", "Mish": "other", "Softmax": "softmax"}
_IDENTITY_MODULES = frozenset({"Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout",
                               "FeatureAlphaDropout", "Identity"})
_LEAVES: dict[type, Callable[..., _T] | None] = {}


def _conv(lw: _Lowerer, mod: Any, path: str, x: _T, prec: str, own: bool) -> _T:
    shape = x.shape
    if mod.transposed or len(shape) != len(mod.kernel_size) + 2 or shape[1] != mod.in_channels:
        raise StructureUnsupported(f"{path}: {type(mod).__name__} does not take input {shape}")
    same = mod.padding == "same"
    pads = (0,) * len(mod.kernel_size) if isinstance(mod.padding, str) else tuple(mod.padding)
    spatial = tuple(h if same else _window_out(h, k, s, p, d, False)
                    for h, k, s, p, d in zip(shape[2:], mod.kernel_size, mod.stride, pads, mod.dilation))
    if min(spatial) < 1:
        raise StructureUnsupported(f"{path}: input {shape} is smaller than the kernel")
    k_area = math.prod(mod.kernel_size)
    macs = shape[0] * mod.out_channels * math.prod(spatial) * (mod.in_channels // mod.groups) * k_area
    kind = conv_kind(mod.in_channels, mod.groups, mod.kernel_size)
    wb = weight_bytes(prec, weight_numel=mod.weight.numel(), out_channels=mod.out_channels,
                      bias_numel=mod.bias.numel() if mod.bias is not None else 0) if own else 0
    return lw.add(lw.module_name(path), kind, prec, [x], (shape[0], mod.out_channels, *spatial), macs=macs,
                  wbytes=wb, kernel=_pair(tuple(mod.kernel_size)))


def _linear(lw: _Lowerer, mod: Any, path: str, x: _T, prec: str, own: bool) -> _T:
    shape = x.shape
    if shape[-1] != mod.in_features:
        raise StructureUnsupported(f"{path}: Linear({mod.in_features}) does not take input {shape}")
    wb = weight_bytes(prec, weight_numel=mod.weight.numel(), out_channels=mod.out_features,
                      bias_numel=mod.bias.numel() if mod.bias is not None else 0) if own else 0
    return lw.add(lw.module_name(path), "linear", prec, [x], (*shape[:-1], mod.out_features),
                  macs=math.prod(shape[:-1]) * mod.in_features * mod.out_features, wbytes=wb)


def _bn(lw: _Lowerer, mod: Any, path: str, x: _T, prec: str, own: bool) -> _T:
    if len(x.shape) < 2 or x.shape[1] != mod.num_features:
        raise StructureUnsupported(f"{path}: BatchNorm({mod.num_features}) does not take input {x.shape}")
    n_params = sum(p.numel() for p in (mod.weight, mod.bias) if p is not None) if own else 0
    return lw.add(lw.module_name(path), "bn", prec, [x], x.shape, wbytes=weight_bytes(prec, other_numel=n_params))


def _pool(lw: _Lowerer, mod: Any, path: str, x: _T, prec: str, own: bool) -> _T:
    from torch import nn

    shape = x.shape
    if len(shape) != 4:
        raise StructureUnsupported(f"{path}: 2-d pool on input {shape}")
    k = _pair(mod.kernel_size)
    s = _pair(mod.stride if mod.stride is not None else mod.kernel_size)
    p = _pair(mod.padding)
    d = _pair(getattr(mod, "dilation", 1))
    spatial = tuple(_window_out(h, kk, ss, pp, dd, bool(mod.ceil_mode)) for h, kk, ss, pp, dd in zip(shape[2:], k, s, p, d))
    if min(spatial) < 1:
        raise StructureUnsupported(f"{path}: input {shape} is smaller than the pooling window")
    op = "maxpool" if isinstance(mod, nn.MaxPool2d) else "avgpool"
    return lw.add(lw.module_name(path), op, prec, [x], (*shape[:2], *spatial), kernel=k)


def _adaptive(lw: _Lowerer, mod: Any, path: str, x: _T, prec: str, own: bool) -> _T:
    from torch import nn

    shape = x.shape
    size = _opt_tuple(mod.output_size, len(shape) - 2)
    spatial = tuple(h if w is None else int(w) for h, w in zip(shape[2:], size))
    if isinstance(mod, nn.AdaptiveMaxPool2d):
        op = "maxpool"
    else:
        op = "gap" if spatial and all(v == 1 for v in spatial) else "avgpool"
    return lw.add(lw.module_name(path), op, prec, [x], (*shape[:2], *spatial))


def _flatten_module(lw: _Lowerer, mod: Any, path: str, x: _T, prec: str, own: bool) -> _T:
    return lw.add(lw.module_name(path), "flatten", prec, [x], _flatten(x.shape, mod.start_dim, mod.end_dim))


def _identity(lw: _Lowerer, mod: Any, path: str, x: _T, prec: str, own: bool) -> _T:
    return lw.add(lw.module_name(path), "other", prec, [x], x.shape, identity=True)


def _elementwise(lw: _Lowerer, mod: Any, path: str, x: _T, prec: str, own: bool) -> _T:
    cls = type(mod).__name__
    op = _ELEMENTWISE_MODULES.get(cls, "other")
    if cls == "Hardtanh":
        op = "relu6" if (mod.min_val, mod.max_val) == (0.0, 6.0) else "other"
    return lw.add(lw.module_name(path), op, prec, [x], x.shape)


def _leaf_handler(cls: type) -> Callable[..., _T] | None:
    """The function that lowers a built-in torch module class (cached per class), or None."""
    try:
        return _LEAVES[cls]
    except KeyError:
        pass
    from torch import nn

    handler: Callable[..., _T] | None = None
    name = cls.__name__
    if issubclass(cls, nn.modules.conv._ConvNd):
        handler = _conv
    elif issubclass(cls, nn.Linear):
        handler = _linear
    elif issubclass(cls, nn.modules.batchnorm._BatchNorm):
        handler = _bn
    elif cls in (nn.AvgPool2d, nn.MaxPool2d):
        handler = _pool
    elif cls in (nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveMaxPool2d):
        handler = _adaptive
    elif cls is nn.Flatten:
        handler = _flatten_module
    elif name in _IDENTITY_MODULES:
        handler = _identity
    elif (name in _ELEMENTWISE_MODULES or name == "Hardtanh") and cls is getattr(nn, name, None):
        handler = _elementwise
    _LEAVES[cls] = handler
    return handler


def _leaf(lw: _Lowerer, mod: Any, path: str, args: Sequence[Any]) -> _T | None:
    """Append a built-in torch module's layer; ``None`` when this module type is not covered."""
    handler = _leaf_handler(type(mod))
    if handler is None or len(args) != 1 or not isinstance(args[0], _T):
        return None
    own = id(mod) not in lw.seen
    lw.seen.add(id(mod))
    return handler(lw, mod, path, args[0], lw.plan.for_module(path), own)


def _opt_tuple(v: Any, n: int) -> tuple[Any, ...]:
    return (v,) * n if v is None or isinstance(v, int) else tuple(v)


def _flatten(shape: tuple[int, ...], start: int = 0, end: int = -1) -> tuple[int, ...]:
    if not shape:
        return (1,)
    start, end = start % len(shape), end % len(shape)
    return (*shape[:start], math.prod(shape[start:end + 1]), *shape[end + 1:])


# --------------------------------------------------------------------------------------------
# Functional ops of a replayed forward


def _function_tables() -> tuple[dict[Any, str], dict[Any, str], dict[str, str]]:
    """The functions the replay computes shapes for, named by the tracer's table (:func:`hwtune.graph.function_table`)."""
    import torch
    import torch.nn.functional as F

    from hwtune.graph import function_table, method_table

    table = function_table()
    binary = {f: op for f, op in table.items() if op in ("add", "mul")}
    binary.update({operator.sub: "other", operator.truediv: "other", torch.sub: "other"})
    unary = {f: op for f, op in table.items() if op in ("relu", "relu6", "hardswish", "sigmoid")}
    unary.update({torch.tanh: "other", F.silu: "other", F.gelu: "other"})
    methods = {m: op for m, op in method_table().items() if op in ("add", "mul", "relu", "sigmoid")}
    return binary, unary, methods


_TABLES: list[Any] = []


def _tables() -> tuple[dict[Any, str], dict[Any, str], dict[str, str]]:
    if not _TABLES:
        _TABLES.append(_function_tables())
    return _TABLES[0]


def _fname(n: Any) -> str:
    t = n.target
    return t if isinstance(t, str) else getattr(t, "__name__", str(t))


def _function(lw: _Lowerer, n: Any, args: tuple[Any, ...], kwargs: dict[str, Any], owner: str) -> Any:
    """Replay one call_function / call_method node; returns its value (a ``_T`` or a Python value)."""
    import torch
    import torch.nn.functional as F

    binary, unary, methods = _tables()
    target = n.target
    name = lw.names.create(_fname(n))
    prec = lw.plan.for_module(owner)
    ins = _tensors(args) + _tensors(list(kwargs.values()))
    if n.op == "call_method":
        obj = args[0] if args else None
        if target in ("size", "dim") and isinstance(obj, _T):
            if target == "dim":
                return len(obj.shape)
            return torch.Size(obj.shape) if len(args) < 2 else obj.shape[int(args[1])]
        if target in methods and isinstance(obj, _T):
            shapes = [t.shape for t in ins] + [() for a in args[1:] if isinstance(a, (int, float))]
            return lw.add(name, methods[target], prec, ins, _broadcast(shapes))
        if target in ("flatten", "view", "reshape") and isinstance(obj, _T):
            return lw.add(name, "flatten", prec, [obj], _reshape(obj.shape, target, args[1:], kwargs))
        if target == "mean" and isinstance(obj, _T):
            return _mean(lw, name, prec, obj, args[1:], kwargs)
        if target in ("contiguous", "clone", "detach") and isinstance(obj, _T):
            return lw.add(name, "other", prec, [obj], obj.shape, identity=True)
        raise StructureUnsupported(f"{owner}: method {target!r} is not replayed")
    if target is getattr and isinstance(args[0], _T) and args[1] == "shape":
        return torch.Size(args[0].shape)
    if target is operator.getitem and not isinstance(args[0], _T):
        return args[0][args[1]]
    if target in binary and ins:
        shapes = [t.shape for t in ins]
        return lw.add(name, binary[target], prec, ins, _broadcast(shapes))
    if target in unary and len(ins) == 1:
        return lw.add(name, unary[target], prec, ins, ins[0].shape)
    if target in (torch.cat, torch.concat) and ins:
        dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
        d = dim % len(ins[0].shape)
        joined = list(ins[0].shape)
        joined[d] = sum(t.shape[d] for t in ins)
        return lw.add(name, "cat", prec, ins, tuple(joined))
    if target is torch.flatten and len(ins) == 1:
        return lw.add(name, "flatten", prec, ins, _reshape(ins[0].shape, "flatten", args[1:], kwargs))
    if target in (F.adaptive_avg_pool2d,) and len(ins) == 1:
        size = _opt_tuple(kwargs.get("output_size", args[1] if len(args) > 1 else None), 2)
        out = (*ins[0].shape[:2], *(h if w is None else int(w) for h, w in zip(ins[0].shape[2:], size)))
        op = "gap" if all(s == 1 for s in out[2:]) else "avgpool"
        return lw.add(name, op, prec, ins, out)
    if target is torch.mean and len(ins) == 1:
        return _mean(lw, name, prec, ins[0], args[1:], kwargs)
    if _fname(n) in CONSTANT_TARGETS and len(ins) == 1:
        return lw.add(name, "other", prec, ins, ins[0].shape, constant=True)
    if _fname(n) in ("dropout",) and len(ins) == 1:
        return lw.add(name, "other", prec, ins, ins[0].shape, identity=True)
    raise StructureUnsupported(f"{owner}: function {_fname(n)!r} is not replayed")


def _reshape(shape: tuple[int, ...], how: str, args: Sequence[Any], kwargs: dict[str, Any]) -> tuple[int, ...]:
    if how == "flatten":
        start = kwargs.get("start_dim", args[0] if args else 0)
        end = kwargs.get("end_dim", args[1] if len(args) > 1 else -1)
        return _flatten(shape, int(start), int(end))
    dims = list(args[0]) if len(args) == 1 and isinstance(args[0], (tuple, list)) else list(args)
    if not all(isinstance(d, int) for d in dims):
        raise StructureUnsupported(f"{how} with non-integer sizes {dims!r}")
    total = math.prod(shape)
    if -1 in dims:
        known = math.prod(d for d in dims if d != -1)
        dims[dims.index(-1)] = total // max(known, 1)
    if math.prod(dims) != total:
        raise StructureUnsupported(f"{how} to {dims} does not fit {shape}")
    return tuple(dims)


def _mean(lw: _Lowerer, name: str, prec: str, x: _T, args: Sequence[Any], kwargs: dict[str, Any]) -> _T:
    dims = kwargs.get("dim", args[0] if args else None)
    keep = bool(kwargs.get("keepdim", args[1] if len(args) > 1 else False))
    if dims is None:
        raise StructureUnsupported("mean over every dimension")
    nd = len(x.shape)
    dims = sorted({d % nd for d in ((dims,) if isinstance(dims, int) else dims)})
    out = tuple(1 if i in dims else s for i, s in enumerate(x.shape)) if keep else \
        tuple(s for i, s in enumerate(x.shape) if i not in dims)
    op = mean_kind(nd, dims)
    return lw.add(name, op, prec, [x], out)


# --------------------------------------------------------------------------------------------
# Cells whose wiring is data (the family hook hwtune.families.WiredCell)


def _is_wired(cls: type) -> bool:
    try:
        return _WIRED[cls]
    except KeyError:
        pass
    from hwtune.families import WiredCell

    _WIRED[cls] = wired = issubclass(cls, WiredCell)
    return wired


_WIRED: dict[type, bool] = {}


def _structure(mod: Any) -> tuple[Any, ...]:
    """What decides the rows a module's children lower to: every submodule's class, and the hyperparameters
    of those whose forward is not ``nn.Sequential``'s (a Sequential's rows follow from its children)."""
    seq = _sequential_forward()
    subs = mod.modules()
    next(subs)
    return tuple((type(m), None if m._modules and type(m).forward is seq else module_attrs(m)) for m in subs)


def _wired_cell(lw: _Lowerer, cell: Any, path: str, args: Sequence[Any]) -> _T:
    """A cell lowered from its ``wiring()``: node j = sum of its inputs' edges, ``zeros_like`` when it has none.

    Mirrors the forward the hook promises (``hwtune.families.WiredCell``); the parity test against the
    traced lowering guards the mirror. Under a uniform precision, a cell whose structure and input
    were lowered before (the identical cells of a stage) has those rows copied.
    """
    if len(args) != 1 or not isinstance(args[0], _T):
        raise StructureUnsupported(f"{path}: a wired cell takes one tensor")
    x = args[0]
    wiring = cell.wiring()
    key = None
    if not lw.plan.overrides:
        key = (type(cell), wiring, x.shape, _structure(cell))  # the cell's own attributes: its wiring
        first = lw.cells.get(key)
        if first is not None:
            return lw.copy_rows(first, path, x)
    start = len(lw.rows)
    prec = lw.plan.for_module(path)
    nodes = [x]
    for inputs in wiring:
        if not inputs:
            nodes.append(lw.add(lw.names.create("zeros_like"), "other", prec, [x], x.shape, constant=True))
            continue
        terms = [nodes[i] if sub is None else lw.module(cell.get_submodule(sub), _join(path, sub), [nodes[i]])
                 for i, sub in inputs]
        total = terms[0]
        for t in terms[1:]:
            total = lw.add(lw.names.create("add"), "add", prec, [total, t], _broadcast([total.shape, t.shape]))
        nodes.append(total)
    if key is not None:
        lw.cells[key] = (start, len(lw.rows), x, nodes[-1], path)
    return nodes[-1]


def raws_from_structure(
    model: Any, input_shape: Sequence[int], plan: PrecisionPlan, *, prune: bool = True,
    trace_unit: TraceUnit | None = None,
) -> list[RawLayer]:
    """The ``RawLayer`` list ``raws_from_graph(trace_layers(...))`` gives, from structure alone.

    Args:
        model: A torch module (its weights are not read, only its hyperparameters).
        input_shape: The single input's shape, batch included.
        plan: Precision per module.
        prune: Drop layers that do not feed the last layer (what exporters do); ``False`` keeps
            every layer (an eager runtime runs them all).
        trace_unit: Traces one module the replay does not cover; ``None`` raises instead.

    Raises:
        StructureUnsupported: a module can neither be replayed nor traced on its own.
    """
    lw = _Lowerer(plan, trace_unit)
    out = lw.module(model, "", [_T(tuple(int(s) for s in input_shape), -1)])
    if not isinstance(out, _T):
        raise StructureUnsupported(f"{type(model).__name__} does not return one tensor")
    return lw.finish(prune)
