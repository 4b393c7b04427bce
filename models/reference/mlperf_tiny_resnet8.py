"""The MLPerf Tiny image-classification reference (IC01): ResNet-8 for CIFAR-10, as a user's model.

Written here from the published layout (mlcommons/tiny, ``benchmark/training/image_classification``,
the Keras ``resnet_v1_eembc`` model): a 3x3 stem of 16 filters, three residual stacks of one basic
block each at 16, 32 and 64 filters (stride 1, 2, 2), a 1x1 strided convolution on the shortcut
where the shape changes (with a bias, no batch norm), 8x8 average pooling and a dense layer. Every
convolution has a bias, as Keras builds them by default. Totals at 1x3x32x32: 78,186 trainable
parameters (78,666 counting batch-norm running statistics, the figure Keras prints) and 12,501,632
multiply-accumulates. ``build(widths=(26, 52, 104))`` gives the IC02 widths.

It is an ordinary ``nn.Module`` file on purpose: ``hwtune compress
models/reference/mlperf_tiny_resnet8.py:build --weights W.pt ...`` takes it like any user's model.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ResNet8", "build"]

REFERENCE_WIDTHS = (16, 32, 64)
IC02_WIDTHS = (26, 52, 104)


class Stack(nn.Module):
    """One basic block: conv-BN-ReLU, conv-BN, plus the (1x1-projected) input, then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Conv2d(c_in, c_out, 1, stride) if (stride != 1 or c_in != c_out) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        skip = x if self.shortcut is None else self.shortcut(x)
        return torch.relu(y + skip)


class ResNet8(nn.Module):
    """stem -> three stacks (stride 1, 2, 2) -> 8x8 average pool -> dense."""

    def __init__(self, widths: tuple[int, int, int] = REFERENCE_WIDTHS, num_classes: int = 10) -> None:
        super().__init__()
        w1, w2, w3 = widths
        self.stem = nn.Sequential(nn.Conv2d(3, w1, 3, 1, 1), nn.BatchNorm2d(w1), nn.ReLU())
        self.stack1 = Stack(w1, w1, 1)
        self.stack2 = Stack(w1, w2, 2)
        self.stack3 = Stack(w2, w3, 2)
        self.pool = nn.AvgPool2d(8)
        self.fc = nn.Linear(w3, num_classes)
        for m in self.modules():  # Keras' he_normal on every convolution
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stack3(self.stack2(self.stack1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def build(widths: tuple[int, int, int] = REFERENCE_WIDTHS, num_classes: int = 10) -> nn.Module:
    """The reference ResNet-8 (or another width triple, e.g. ``IC02_WIDTHS``), untrained."""
    return ResNet8(tuple(widths), num_classes)  # type: ignore[arg-type]
