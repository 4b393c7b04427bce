"""A plain CNN for small images: stem conv, stages of conv-BN-ReLU blocks, pooled linear head.

Stage 1 runs at the stem's resolution; every later stage opens with a stride-2 block, so a
3-stage net at 28x28 with ``stem_stride=2`` works at 14, 7 and 4 pixels. Cheap enough to train
an epoch of Fashion-MNIST on a laptop CPU in seconds, which is what a search needs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, cast

import torch
from torch import nn

from hwtune.families._base import ChannelGroups, Knob, ModelFamily
from hwtune.families._blocks import ClassifierHead, ConvBNAct
from hwtune.families._registry import register_family

__all__ = ["ConvNet", "ConvNetFamily"]


class ConvNet(nn.Module):
    """stem -> stages (``depth[i]`` conv-BN-ReLU blocks of ``width[i]`` channels) -> head."""

    def __init__(
        self,
        width: tuple[int, ...],
        depth: tuple[int, ...],
        kernel_size: tuple[int, ...],
        *,
        stem_width: int = 16,
        stem_stride: int = 1,
        num_classes: int = 10,
        in_channels: int = 1,
    ) -> None:
        super().__init__()
        self.stem = ConvBNAct(in_channels, stem_width, 3, stride=stem_stride)
        stages, c_in = [], stem_width
        for s, (c, d, k) in enumerate(zip(width, depth, kernel_size, strict=True)):
            blocks = [ConvBNAct(c_in if b == 0 else c, c, k, stride=2 if (s > 0 and b == 0) else 1) for b in range(d)]
            stages.append(nn.Sequential(*blocks))
            c_in = c
        self.stages = nn.Sequential(*stages)
        self.head = ClassifierHead(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


@register_family
class ConvNetFamily(ModelFamily):
    """Plain conv-BN-ReLU CNN with per-stage width, depth and kernel size."""

    name = "convnet"
    description = (
        "plain CNN for small images: stem, stages of conv-BN-ReLU blocks (stride 2 between stages), GAP + linear"
    )
    knobs: ClassVar[Mapping[str, Knob]] = {
        "width": Knob("width", "output channels of the stage", per_stage=True, low=1, high=2048),
        "depth": Knob("depth", "conv-BN-ReLU blocks in the stage", per_stage=True, low=1, high=16, default=1),
        "kernel_size": Knob(
            "kernel_size", "conv kernel size in the stage", per_stage=True, choices=(1, 3, 5, 7), default=3
        ),
        "stem_width": Knob("stem_width", "output channels of the 3x3 stem conv", low=1, high=2048, default=16),
        "stem_stride": Knob(
            "stem_stride", "stride of the stem conv (2 halves every later cost)", choices=(1, 2), default=1
        ),
    }
    default_knobs: ClassVar[Mapping[str, Any]] = {
        "width": (16, 32, 64),
        "depth": (1, 1, 1),
        "kernel_size": (3, 3, 3),
        "stem_width": 16,
        "stem_stride": 1,
    }
    min_stages, max_stages = 1, 8
    sliceable = True

    def owns(self, model: nn.Module) -> bool:
        return isinstance(model, ConvNet)

    def channel_groups(self, model: nn.Module) -> ChannelGroups:
        """No residuals: every block's output channels are a group of their own."""
        groups: ChannelGroups = {"stem.conv": ("stem", None), "stem.bn": ("stem", "stem")}
        prev = "stem"
        for s, stage in enumerate(cast("Iterable[nn.Sequential]", model.stages)):  # torch says Tensor | Module
            for b in range(len(stage)):
                g = f"stages.{s}.{b}"
                groups[f"{g}.conv"] = (g, prev)
                groups[f"{g}.bn"] = (g, g)
                prev = g
        groups["head.fc"] = (None, prev)
        return groups

    def _build(self, knobs: Mapping[str, Any], *, num_classes: int, in_channels: int, input_size: int) -> nn.Module:
        return ConvNet(
            knobs["width"],
            knobs["depth"],
            knobs["kernel_size"],
            stem_width=knobs["stem_width"],
            stem_stride=knobs["stem_stride"],
            num_classes=num_classes,
            in_channels=in_channels,
        )
