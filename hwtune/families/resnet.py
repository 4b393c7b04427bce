"""Basic-block ResNet (He et al., CVPR 2016) with per-stage width, depth and kernel size.

Inputs above 64 px get torchvision's ImageNet stem (7x7 stride-2 conv + 3x3 max pool); with
``width=(64, 128, 256, 512), depth=(2, 2, 2, 2)`` at 224x224 the model has exactly
torchvision's ResNet-18 parameter count (tested). Smaller inputs get the CIFAR stem (3x3
stride-1 conv, no pool). Stage 1 keeps the resolution, every later stage halves it; a 1x1
conv + BN shortcut appears where the shape changes (torchvision's option B).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, cast

import torch
from torch import nn

from hwtune.families._base import ChannelGroups, Knob, ModelFamily
from hwtune.families._blocks import ClassifierHead, ConvBNAct
from hwtune.families._registry import register_family

__all__ = ["BasicBlock", "ResNet", "ResNetFamily"]

SMALL_INPUT_PX = 64


class BasicBlock(nn.Module):
    """kxk conv-BN-ReLU -> kxk conv-BN, plus the (projected) input, then ReLU (k = 3 unless told)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, kernel_size: int = 3) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size, stride, pad, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size, 1, pad, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                OrderedDict(
                    conv=nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                    bn=nn.BatchNorm2d(out_channels),
                )
            )
        self.act2 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))
        return self.act2(out + identity)


class ResNet(nn.Module):
    """stem -> stages of ``depth[i]`` basic blocks at ``width[i]`` channels -> GAP + linear."""

    def __init__(
        self,
        width: tuple[int, ...],
        depth: tuple[int, ...],
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        imagenet_stem: bool = False,
        kernel_size: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__()
        c_in = width[0]
        if imagenet_stem:
            self.stem = nn.Sequential(
                OrderedDict(
                    conv=nn.Conv2d(in_channels, c_in, 7, 2, 3, bias=False),
                    bn=nn.BatchNorm2d(c_in),
                    act=nn.ReLU(inplace=True),
                    pool=nn.MaxPool2d(3, 2, 1),
                )
            )
        else:
            self.stem = ConvBNAct(in_channels, c_in, 3)
        kernels = (3,) * len(width) if kernel_size is None else kernel_size
        stages = []
        for s, (c, d, k) in enumerate(zip(width, depth, kernels, strict=True)):
            blocks = []
            for b in range(d):
                blocks.append(BasicBlock(c_in, c, 2 if (s > 0 and b == 0) else 1, k))
                c_in = c
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.head = ClassifierHead(c_in, num_classes)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


@register_family
class ResNetFamily(ModelFamily):
    """Basic-block ResNet with per-stage width, depth and kernel size (3 unless a candidate says otherwise)."""

    name = "resnet"
    description = "basic-block ResNet: per-stage width, depth and kernel size (stride 2 between stages), GAP + linear"
    knobs: ClassVar[Mapping[str, Knob]] = {
        "width": Knob("width", "channels of the stage (the stem uses stage 1's)", per_stage=True, low=1, high=2048),
        "depth": Knob("depth", "basic blocks in the stage", per_stage=True, low=1, high=16, default=2),
        "kernel_size": Knob(
            "kernel_size", "kernel size of the stage's block convolutions", per_stage=True, choices=(3, 5, 7), default=3
        ),
    }
    default_knobs: ClassVar[Mapping[str, Any]] = {"width": (64, 128, 256, 512), "depth": (2, 2, 2, 2)}
    min_stages, max_stages = 1, 8
    sliceable = True

    def owns(self, model: nn.Module) -> bool:
        return isinstance(model, ResNet)

    def channel_groups(self, model: nn.Module) -> ChannelGroups:
        """A block without a downsample adds its input to its output, so both are one group:
        the stem and every block of stage 1 share one group, and each later stage's blocks
        share the group opened by their first block's downsample."""
        groups: ChannelGroups = {"stem.conv": ("stem", None), "stem.bn": ("stem", "stem")}
        prev = "stem"
        for s, stage in enumerate(cast("Iterable[nn.Sequential]", model.stages)):  # torch says Tensor | Module
            for b, block in enumerate(stage):
                path = f"stages.{s}.{b}"
                out = prev
                if block.downsample is not None:
                    out = f"stages.{s}"
                    groups[f"{path}.downsample.conv"] = (out, prev)
                    groups[f"{path}.downsample.bn"] = (out, out)
                hidden = f"{path}.conv1"
                groups[f"{path}.conv1"] = (hidden, prev)
                groups[f"{path}.bn1"] = (hidden, hidden)
                groups[f"{path}.conv2"] = (out, hidden)
                groups[f"{path}.bn2"] = (out, out)
                prev = out
        groups["head.fc"] = (None, prev)
        return groups

    def _build(self, knobs: Mapping[str, Any], *, num_classes: int, in_channels: int, input_size: int) -> nn.Module:
        return ResNet(
            knobs["width"],
            knobs["depth"],
            num_classes=num_classes,
            in_channels=in_channels,
            imagenet_stem=input_size > SMALL_INPUT_PX,
            kernel_size=knobs["kernel_size"],
        )
