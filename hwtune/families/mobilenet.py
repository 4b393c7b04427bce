"""MobileNetV2 (Sandler et al., CVPR 2018) with searchable width, depth, expansion and kernel size.

Same layout, channel rounding and initialisation as ``torchvision.models.MobileNetV2``; with
the default knobs at 224x224 it has exactly torchvision's 3,504,872 parameters (tested). Two
changes make it a search space: the depthwise kernel size is a per-stage knob (torchvision's
``InvertedResidual`` is 3x3 only, hence our own block), and inputs of 64 px or less get a
stride-1 stem, so 28x28 / 32x32 images are downsampled 16x instead of 32x (the last stages
then still see 2x2 instead of a single pixel).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar, cast

import torch
from torch import nn

from hwtune.families._base import ChannelGroups, Knob, ModelFamily, make_divisible
from hwtune.families._blocks import ClassifierHead, ConvBNAct
from hwtune.families._registry import register_family

__all__ = ["STAGE_CHANNELS", "STAGE_STRIDES", "InvertedResidual", "MobileNetV2Family", "MobileNetV2Net"]

# torchvision's inverted_residual_setting columns c and s (t and n are knobs).
STAGE_CHANNELS: tuple[int, ...] = (16, 24, 32, 64, 96, 160, 320)
STAGE_STRIDES: tuple[int, ...] = (1, 2, 2, 2, 1, 2, 1)
STEM_CHANNELS = 32
# Inputs up to this size get a stride-1 stem (CIFAR-style adaptation).
SMALL_INPUT_PX = 64


class InvertedResidual(nn.Module):
    """1x1 expand (skipped when t = 1) -> kxk depthwise -> 1x1 linear projection (+ residual)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int, kernel_size: int) -> None:
        super().__init__()
        hidden = round(in_channels * expand_ratio)
        self.use_residual = stride == 1 and in_channels == out_channels
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        if expand_ratio != 1:
            layers["expand"] = ConvBNAct(in_channels, hidden, 1, act=nn.ReLU6)
        layers["dw"] = ConvBNAct(hidden, hidden, kernel_size, stride=stride, groups=hidden, act=nn.ReLU6)
        layers["project"] = ConvBNAct(hidden, out_channels, 1, act=None)
        self.conv = nn.Sequential(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_residual:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2Net(nn.Module):
    """stem (3x3 conv) -> 7 stages of inverted residuals -> head (1x1 conv, pool, dropout, linear)."""

    def __init__(
        self,
        *,
        width_mult: float = 1.0,
        depth: tuple[int, ...] = (1, 2, 3, 4, 3, 3, 1),
        expand_ratio: tuple[int, ...] = (1, 6, 6, 6, 6, 6, 6),
        kernel_size: tuple[int, ...] = (3,) * 7,
        last_channel: int = 1280,
        stem_stride: int = 2,
        dropout: float = 0.2,
        num_classes: int = 10,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        c_in = make_divisible(STEM_CHANNELS * width_mult, 8)
        self.stem = ConvBNAct(in_channels, c_in, 3, stride=stem_stride, act=nn.ReLU6)
        stages = []
        for c, s, n, t, k in zip(STAGE_CHANNELS, STAGE_STRIDES, depth, expand_ratio, kernel_size, strict=True):
            c_out = make_divisible(c * width_mult, 8)
            blocks = []
            for b in range(n):
                blocks.append(InvertedResidual(c_in, c_out, s if b == 0 else 1, t, k))
                c_in = c_out
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        c_last = make_divisible(last_channel * max(1.0, width_mult), 8)
        self.head = ClassifierHead(c_last, num_classes, dropout=dropout, pre=ConvBNAct(c_in, c_last, 1, act=nn.ReLU6))
        # torchvision's initialisation (trains noticeably better than PyTorch's default here).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


@register_family
class MobileNetV2Family(ModelFamily):
    """MobileNetV2 with width multiplier and per-stage depth, expansion ratio and kernel size."""

    name = "mobilenet_v2"
    description = "MobileNetV2 inverted residuals: width_mult, per-stage depth / expand_ratio / kernel_size (7 stages)"
    knobs: ClassVar[Mapping[str, Knob]] = {
        "width_mult": Knob(
            "width_mult",
            "channel multiplier (channels rounded to multiples of 8)",
            kind=float,
            low=0.05,
            high=4.0,
            default=1.0,
        ),
        "depth": Knob("depth", "inverted-residual blocks in the stage", per_stage=True, low=1, high=8),
        "expand_ratio": Knob("expand_ratio", "expansion ratio t of the stage's blocks", per_stage=True, low=1, high=8),
        "kernel_size": Knob(
            "kernel_size", "depthwise kernel size of the stage", per_stage=True, choices=(3, 5, 7), default=3
        ),
        "last_channel": Knob(
            "last_channel",
            "channels of the final 1x1 conv (scaled up when width_mult > 1)",
            low=8,
            high=4096,
            default=1280,
        ),
    }
    default_knobs: ClassVar[Mapping[str, Any]] = {
        "width_mult": 1.0,
        "depth": (1, 2, 3, 4, 3, 3, 1),
        "expand_ratio": (1, 6, 6, 6, 6, 6, 6),
        "kernel_size": (3,) * 7,
        "last_channel": 1280,
    }
    min_stages = max_stages = 7
    sliceable = True

    def owns(self, model: nn.Module) -> bool:
        return isinstance(model, MobileNetV2Net)

    def slicing_problems(self, choices: Mapping[str, Sequence[tuple[Any, ...]]]) -> list[str]:
        """expand_ratio 1 drops the expansion conv, so its depthwise conv would run on the block's
        input channels where the parent's runs on expanded ones: not a slice of the parent."""
        problems = []
        for i, stage_choices in enumerate(choices.get("expand_ratio", ())):
            if 1 in stage_choices and max(stage_choices) > 1:
                problems.append(
                    f"knobs.expand_ratio of stage {i + 1} mixes 1 (no expansion conv) with {max(stage_choices)}; "
                    "a shared parent needs either only 1 or only ratios > 1 per stage"
                )
        return problems

    def channel_groups(self, model: nn.Module) -> ChannelGroups:
        """Blocks with a residual add keep their input's group; the depthwise conv works on its
        block's hidden (expanded) group, or on the input group when there is no expansion."""
        groups: ChannelGroups = {"stem.conv": ("stem", None), "stem.bn": ("stem", "stem")}
        prev = "stem"
        for s, stage in enumerate(cast("Iterable[nn.Sequential]", model.stages)):  # torch says Tensor | Module
            for b, block in enumerate(stage):
                path = f"stages.{s}.{b}"
                out = prev if block.use_residual else path
                hidden = prev
                if hasattr(block.conv, "expand"):
                    hidden = f"{path}.hidden"
                    groups[f"{path}.conv.expand.conv"] = (hidden, prev)
                    groups[f"{path}.conv.expand.bn"] = (hidden, hidden)
                groups[f"{path}.conv.dw.conv"] = (hidden, hidden)
                groups[f"{path}.conv.dw.bn"] = (hidden, hidden)
                groups[f"{path}.conv.project.conv"] = (out, hidden)
                groups[f"{path}.conv.project.bn"] = (out, out)
                prev = out
        groups["head.pre.conv"] = ("head.pre", prev)
        groups["head.pre.bn"] = ("head.pre", "head.pre")
        groups["head.fc"] = (None, "head.pre")
        return groups

    def _build(self, knobs: Mapping[str, Any], *, num_classes: int, in_channels: int, input_size: int) -> nn.Module:
        return MobileNetV2Net(
            width_mult=knobs["width_mult"],
            depth=knobs["depth"],
            expand_ratio=knobs["expand_ratio"],
            kernel_size=knobs["kernel_size"],
            last_channel=knobs["last_channel"],
            stem_stride=1 if input_size <= SMALL_INPUT_PX else 2,
            num_classes=num_classes,
            in_channels=in_channels,
        )
