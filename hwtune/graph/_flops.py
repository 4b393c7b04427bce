"""FLOPs and MACs with ``torch.utils.flop_counter.FlopCounterMode`` (aten level: sees matmul, attention, functional ops).

Convention: 1 MAC = 2 FLOPs, ``macs = flops // 2``. Only matmul-like aten ops (convolution, mm/addmm/bmm,
attention) are counted, so BatchNorm, pooling and activations count 0 — on conv/linear models the total
equals the sum of the Conv2d/Linear MACs that ``thop`` reports per module (thop's *total* reads higher
because it also counts BN and pooling).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hwtune.errors import ModelError
from hwtune.graph._inputs import shape_message

if TYPE_CHECKING:
    import torch
    from torch import nn
    from torch.utils.flop_counter import FlopCounterMode

__all__ = ["FlopCount", "count_flops", "flop_counter"]


@dataclass(frozen=True)
class FlopCount:
    """FLOPs of one forward pass.

    Attributes:
        flops: Total floating-point operations (2 per multiply-accumulate).
        macs: ``flops // 2``.
        by_module: MACs per module path (``features.0.0``), for every module that ran counted ops,
            containers included (a container's figure includes its children); ``""`` is the whole model.
    """

    flops: int
    macs: int
    by_module: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"flops": self.flops, "macs": self.macs, "by_module": dict(self.by_module)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FlopCount:
        return cls(
            int(data["flops"]), int(data["macs"]), {str(k): int(v) for k, v in dict(data.get("by_module", {})).items()}
        )


def _bl(t: Any) -> tuple[int, int, int]:
    """(batch, length, embed) of a batch-first or unbatched sequence tensor."""
    shape = tuple(t.shape)
    return (1, shape[0], shape[1]) if len(shape) == 2 else (shape[0], shape[1], shape[2])


def _extra_formulas() -> dict[Any, Any]:
    """FLOP formulas torch's table (2.14) lacks; without them these ops silently count 0.

    - ``_scaled_dot_product_flash_attention_for_cpu``: what ``scaled_dot_product_attention`` runs on CPU.
    - ``_native_multi_head_attention``: ``nn.MultiheadAttention``'s inference fast path (eval, no grad).
    - ``_transformer_encoder_layer_fwd``: ``nn.TransformerEncoderLayer``'s inference fast path.
    """
    import torch
    from torch.utils import flop_counter as fc

    def cpu_flash_sdpa(query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
        return int(fc.sdpa_flop_count(query.shape, key.shape, value.shape))

    def mha_macs(query: Any, key: Any) -> int:
        b, lq, e = _bl(query)
        _, lk, _ = _bl(key)
        projections = b * lq * e * e + 2 * b * lk * e * e + b * lq * e * e  # q, k, v, out
        attention = 2 * b * lq * lk * e  # q.k^T and attn.v summed over heads
        return projections + attention

    def native_mha(query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
        return 2 * mha_macs(query, key)

    def encoder_layer(src: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
        # args: embed_dim, num_heads, in_proj w/b, out_proj w/b, use_gelu, norm_first, eps,
        # norm1 w/b, norm2 w/b, linear1 weight (ff, E), linear1 bias, linear2 weight, ...
        b, length, _ = _bl(src)
        ff = int(args[13].shape[0]) if len(args) > 13 else 0
        e = int(args[0])
        return 2 * (mha_macs(src, src) + 2 * b * length * e * ff)

    extra: dict[Any, Any] = {}
    fn: Any  # a counting function; torch's FlopCounterMode reads the flag set on it below
    for name, fn in (
        ("_scaled_dot_product_flash_attention_for_cpu", cpu_flash_sdpa),
        ("_native_multi_head_attention", native_mha),
        ("_transformer_encoder_layer_fwd", encoder_layer),
    ):
        op = getattr(torch.ops.aten, name, None)
        if op is not None and op not in fc.flop_registry:
            fn._get_raw = True  # receive tensors, not shapes
            extra[op] = fn
    return extra


def flop_counter() -> FlopCounterMode:
    """A silent ``FlopCounterMode`` with hwtune's extra formulas (CPU flash attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    return FlopCounterMode(display=False, custom_mapping=_extra_formulas())


def count_flops(model: nn.Module, example: torch.Tensor) -> FlopCount:
    """Count FLOPs and MACs of ``model(example)`` in eval mode.

    Args:
        model: Any ``nn.Module``; its train/eval mode is restored afterwards.
        example: The input batch, e.g. ``torch.randn(1, 3, 224, 224)``.

    Returns:
        A ``FlopCount``.

    Raises:
        ModelError: If the model rejects the input.

    Example:
        >>> import torch
        >>> count_flops(torch.nn.Linear(8, 4), torch.randn(1, 8)).macs
        32
    """
    import torch

    was_training = model.training
    model.eval()
    counter = flop_counter()
    try:
        with torch.no_grad(), counter:
            model(example)
    except Exception as exc:  # torch raises many types for a bad input
        raise ModelError(shape_message(model, tuple(getattr(example, "shape", ())), exc)) from exc
    finally:
        model.train(was_training)
    flops = int(counter.get_total_flops())
    root = type(model).__name__
    by_module: dict[str, int] = {}
    for name, ops in counter.get_flop_counts().items():
        if name == "Global":
            continue
        # ModuleTracker names modules "<RootClass>.<fqn>"; strip the root so keys are module paths.
        path = "" if name == root else name[len(root) + 1 :] if name.startswith(root + ".") else name
        by_module[path] = int(sum(ops.values())) // 2
    return FlopCount(flops=flops, macs=flops // 2, by_module=by_module)
