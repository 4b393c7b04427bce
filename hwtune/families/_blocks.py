"""Building blocks shared by the families. Named children keep module paths readable
(``stages.0.1.conv``), which is how mixed precision and the profiler find a layer."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

__all__ = ["ClassifierHead", "ConvBNAct"]


class ConvBNAct(nn.Sequential):
    """conv (no bias) -> BatchNorm -> activation; ``act=None`` leaves the activation out."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        act: type[nn.Module] | None = nn.ReLU,
    ) -> None:
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        layers["conv"] = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=(kernel_size - 1) // 2,
            groups=groups,
            bias=False,
        )
        layers["bn"] = nn.BatchNorm2d(out_channels)
        if act is not None:
            layers["act"] = act(inplace=True) if act in (nn.ReLU, nn.ReLU6) else act()
        super().__init__(layers)


class ClassifierHead(nn.Module):
    """Global average pool -> flatten -> (dropout) -> linear, after optional ``pre`` layers."""

    def __init__(self, in_features: int, num_classes: int, *, dropout: float = 0.0, pre: nn.Module | None = None):
        super().__init__()
        # Absent parts are not registered at all (no nn.Identity): every module left is a real
        # layer for the profiler. The ``is not None`` tests are static, so fx traces them away.
        self.pre = pre
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre is not None:
            x = self.pre(x)
        x = torch.flatten(self.pool(x), 1)
        if self.dropout is not None:
            x = self.dropout(x)
        return self.fc(x)
