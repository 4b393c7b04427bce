"""NAS-Bench-201 networks, built from the cell string (Dong & Yang, ICLR 2020).

The network (CIFAR setting, definition in ``data/hw-nas-bench/README.md`` of the shared data):
stem 3x3 conv + BN; three stages of ``cells_per_stage`` cells at C, 2C, 4C channels, stages 2
and 3 opening with a stride-2 ResNet reduction block; head BN, ReLU, global pool, linear. All
cells share one genotype, the knob ``arch``:
``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`` lists the op on each edge (j <- i) of the 4-node cell.

Like the reference implementation (``InferCell`` in the NAS-Bench-201 code) every non-``none``
op is built and run, even when its result cannot reach the cell output: that is the
convention behind the benchmark's FLOPs/params (architecture 0: 15.64737 M MACs, 0.129306 M
params). ``none`` builds nothing; a node whose inputs are all ``none`` is zeros.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from hwtune.errors import ConfigError, did_you_mean
from hwtune.families._base import CellWiring, Knob, ModelFamily
from hwtune.families._blocks import ClassifierHead, ConvBNAct
from hwtune.families._registry import register_family

__all__ = [
    "NB201",
    "NB201_OPS",
    "NB201Net",
    "arch_problems",
    "cell_connected",
    "format_arch",
    "make_op",
    "parse_arch",
]

NB201_OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
# Edge order of the string: (1<-0), (2<-0), (2<-1), (3<-0), (3<-1), (3<-2).
_EDGES: tuple[tuple[int, int], ...] = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
_FORMAT = "|op~0|+|op~0|op~1|+|op~0|op~1|op~2|"
# The best CIFAR-10 cell of the benchmark (a ResNet-like cell); only a default.
DEFAULT_ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"


def arch_problems(arch: Any) -> list[str]:
    """Every problem with a cell string (format, node/edge structure, op names); [] when valid."""
    if not isinstance(arch, str):
        return [f"must be a NAS-Bench-201 cell string like '{_FORMAT}', got {arch!r}"]
    groups = arch.split("+")
    if len(groups) != 3:
        return [f"must have 3 node groups separated by '+' like '{_FORMAT}', got {len(groups)} in {arch!r}"]
    problems = []
    for j, group in enumerate(groups, start=1):
        if not (group.startswith("|") and group.endswith("|") and len(group) > 1):
            problems.append(f"node {j} group {group!r} must start and end with '|'")
            continue
        tokens = group[1:-1].split("|")
        if len(tokens) != j:
            problems.append(
                f"node {j} must have {j} incoming edge(s) (sources 0..{j - 1}), got {len(tokens)} in {group!r}"
            )
            continue
        for i, token in enumerate(tokens):
            op, sep, src = token.partition("~")
            if not sep or src != str(i):
                problems.append(f"edge {i + 1} of node {j} must be written 'op~{i}', got {token!r}")
            if op not in NB201_OPS:
                problems.append(
                    f"unknown op {op!r} on edge {j}<-{i}{did_you_mean(op, NB201_OPS)} (ops: {', '.join(NB201_OPS)})"
                )
    return problems


def parse_arch(arch: str) -> tuple[tuple[str, ...], ...]:
    """Ops per node: ``((op_1<-0,), (op_2<-0, op_2<-1), (op_3<-0, op_3<-1, op_3<-2))``.

    Raises:
        ConfigError: the string is malformed (every problem listed).
    """
    problems = arch_problems(arch)
    if problems:
        raise ConfigError("\n".join(f"nb201 arch {p}" for p in problems))
    return tuple(tuple(t.partition("~")[0] for t in g[1:-1].split("|")) for g in arch.split("+"))


def format_arch(ops: Mapping[tuple[int, int], str] | tuple[str, ...]) -> str:
    """Cell string from six ops in edge order, or from ``{(j, i): op}``."""
    if isinstance(ops, Mapping):
        seq = [ops[e] for e in _EDGES]
    else:
        seq = list(ops)
    if len(seq) != 6:
        raise ConfigError(f"nb201 cell needs 6 ops (one per edge), got {len(seq)}")
    nodes, k = [], 0
    for j in (1, 2, 3):
        nodes.append("|" + "|".join(f"{seq[k + i]}~{i}" for i in range(j)) + "|")
        k += j
    return "+".join(nodes)


def cell_connected(arch: str) -> bool:
    """Whether a path of non-``none`` ops joins the cell input (node 0) to its output (node 3)."""
    ops = parse_arch(arch)
    reach = {0}
    for j, node_ops in enumerate(ops, start=1):
        if any(op != "none" and i in reach for i, op in enumerate(node_ops)):
            reach.add(j)
    return 3 in reach


def _check_arch(value: Any) -> str | None:
    problems = arch_problems(value)
    return "; ".join(problems) if problems else None


class _ReLUConvBN(nn.Sequential):
    """ReLU -> conv (no bias) -> BN: NAS-Bench-201's ``ReLUConvBN`` (pre-activation order)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> None:
        super().__init__(
            OrderedDict(
                act=nn.ReLU(inplace=False),
                conv=nn.Conv2d(in_channels, out_channels, kernel_size, stride, (kernel_size - 1) // 2, bias=False),
                bn=nn.BatchNorm2d(out_channels),
            )
        )


def make_op(op: str, channels: int) -> nn.Module | None:
    """The module of one NAS-Bench-201 edge op at ``channels`` (None for the identity and ``none``).

    Args:
        op: One of :data:`NB201_OPS`.
        channels: Input and output channels of the edge.

    Example:
        >>> type(make_op("nor_conv_3x3", 16)).__name__, make_op("skip_connect", 16)
        ('_ReLUConvBN', None)
    """
    if op == "nor_conv_1x1":
        return _ReLUConvBN(channels, channels, 1)
    if op == "nor_conv_3x3":
        return _ReLUConvBN(channels, channels, 3)
    if op == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    return None  # skip_connect is the identity; none is dropped


class NB201Cell(nn.Module):
    """One cell: node j = sum over i < j of op_(j<-i)(node i); output node 3.

    The wiring is fixed at construction, so ``forward`` has no data-dependent control flow
    and traces with ``torch.fx``.
    """

    def __init__(self, ops: tuple[tuple[str, ...], ...], channels: int) -> None:
        super().__init__()
        self.edges = nn.ModuleDict()
        # per node: list of (source node, edge module key or None for identity)
        self._inputs: list[list[tuple[int, str | None]]] = []
        for j, node_ops in enumerate(ops, start=1):
            inputs: list[tuple[int, str | None]] = []
            for i, op in enumerate(node_ops):
                if op == "none":
                    continue
                module = make_op(op, channels)
                key = None
                if module is not None:
                    key = f"edge_{j}_{i}"
                    self.edges[key] = module
                inputs.append((i, key))
            self._inputs.append(inputs)

    def wiring(self) -> CellWiring:
        """Per node: (source node, edge module path or None for a skip); see :class:`~hwtune.families.WiredCell`."""
        return tuple(
            tuple((i, None if key is None else f"edges.{key}") for i, key in inputs) for inputs in self._inputs
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for inputs in self._inputs:
            if not inputs:
                nodes.append(torch.zeros_like(x))
                continue
            terms = [nodes[i] if key is None else self.edges[key](nodes[i]) for i, key in inputs]
            total = terms[0]
            for term in terms[1:]:
                total = total + term
            nodes.append(total)
        return nodes[-1]


class NB201Reduction(nn.Module):
    """Stride-2 ResNet basic block between stages; no activation after the sum."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv_a = _ReLUConvBN(in_channels, out_channels, 3, stride=2)
        self.conv_b = _ReLUConvBN(out_channels, out_channels, 3, stride=1)
        self.shortcut = nn.Sequential(
            OrderedDict(
                pool=nn.AvgPool2d(2, stride=2, padding=0),
                conv=nn.Conv2d(in_channels, out_channels, 1, bias=False),
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_b(self.conv_a(x)) + self.shortcut(x)


class NB201Net(nn.Module):
    """The NAS-Bench-201 macro skeleton around one cell genotype."""

    #: Plain attributes ``forward`` reads (none: ``arch`` is a label, the cells carry the wiring), so
    #: the latency predictor replays one forward template for every genotype.
    forward_attrs: tuple[str, ...] = ()

    def __init__(
        self, arch: str, *, channels: int = 16, cells_per_stage: int = 5, num_classes: int = 10, in_channels: int = 3
    ) -> None:
        super().__init__()
        ops = parse_arch(arch)
        self.arch = arch
        self.stem = ConvBNAct(in_channels, channels, 3, act=None)
        stages = []
        for s in range(3):
            c = channels * 2**s
            blocks: list[nn.Module] = [NB201Reduction(c // 2, c)] if s > 0 else []
            blocks += [NB201Cell(ops, c) for _ in range(cells_per_stage)]
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        c_out = channels * 4
        pre = nn.Sequential(OrderedDict(bn=nn.BatchNorm2d(c_out), act=nn.ReLU(inplace=False)))
        self.head = ClassifierHead(c_out, num_classes, pre=pre)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


@register_family
class NB201(ModelFamily):
    """NAS-Bench-201 cell networks (15,625 cells over 5 ops on 6 edges)."""

    name = "nb201"
    description = "NAS-Bench-201 cell network (CIFAR skeleton: 3 stages x N cells, C/2C/4C channels)"
    knobs: ClassVar[Mapping[str, Knob]] = {
        "arch": Knob("arch", f"cell string {_FORMAT}; ops: {', '.join(NB201_OPS)}", kind=str, check=_check_arch),
        "channels": Knob("channels", "channels of the first stage (C; doubled per stage)", low=1, high=1024),
        "cells_per_stage": Knob("cells_per_stage", "cells per stage (N)", low=1, high=16),
    }
    default_knobs: ClassVar[Mapping[str, Any]] = {"arch": DEFAULT_ARCH, "channels": 16, "cells_per_stage": 5}
    min_stages = max_stages = 3

    def expand_knob(self, name: str, spec: Mapping[str, Any]) -> tuple[dict[str, tuple[Any, ...]], list[str]]:
        """``arch = {ops = [...], edge_3_0 = [...]}``: each edge searched over ``ops`` (or its own list)."""
        if name != "arch":
            return super().expand_knob(name, spec)
        edge_names = [f"edge_{j}_{i}" for j, i in _EDGES]
        problems: list[str] = []
        for key in spec:
            if key != "ops" and key not in edge_names:
                problems.append(f"unknown key {key!r}{did_you_mean(key, ['ops', *edge_names])} (keys: ops, edge_J_I)")
        parts: dict[str, tuple[Any, ...]] = {}
        for edge in edge_names:
            choices = spec.get(edge, spec.get("ops", NB201_OPS))
            if isinstance(choices, str):
                choices = [choices]
            if not isinstance(choices, list) or not choices:
                problems.append(f"{edge if edge in spec else 'ops'} must be a non-empty list of ops, got {choices!r}")
                continue
            for op in choices:
                if op not in NB201_OPS:
                    problems.append(
                        f"{edge if edge in spec else 'ops'}: unknown op {op!r}{did_you_mean(str(op), NB201_OPS)}"
                        f" (ops: {', '.join(NB201_OPS)})"
                    )
            if len(set(choices)) != len(choices):
                problems.append(f"{edge if edge in spec else 'ops'} lists an op twice: {choices!r}")
            parts[edge] = tuple(choices)
        return parts, problems

    def join_knob(self, name: str, parts: Mapping[str, Any]) -> Any:
        if name != "arch":
            return super().join_knob(name, parts)
        return format_arch({(j, i): parts[f"edge_{j}_{i}"] for j, i in _EDGES})

    def split_knob(self, name: str, value: Any) -> dict[str, Any]:
        if name != "arch":
            return super().split_knob(name, value)
        ops = [op for node in parse_arch(value) for op in node]
        return {f"edge_{j}_{i}": op for (j, i), op in zip(_EDGES, ops, strict=True)}

    def input_problems(self, knobs: Mapping[str, Any], *, in_channels: int, input_size: int) -> list[str]:
        if input_size % 4:
            why = "two stride-2 reductions whose conv and pool branches must agree"
            return [f"input_size must be a multiple of 4 for family 'nb201' ({why}), got {input_size}"]
        return []

    def _build(self, knobs: Mapping[str, Any], *, num_classes: int, in_channels: int, input_size: int) -> nn.Module:
        return NB201Net(
            knobs["arch"],
            channels=knobs["channels"],
            cells_per_stage=knobs["cells_per_stage"],
            num_classes=num_classes,
            in_channels=in_channels,
        )
