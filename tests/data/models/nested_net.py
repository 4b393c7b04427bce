"""A user's model that is not one of hwtune's: residual stages with squeeze-and-excitation blocks
nested inside them, and a two-branch concatenating transition (module names two and three levels
deep, like ``s2.t2.b``). Small enough for tests (1x28x28 inputs, <= 32 channels)."""

from __future__ import annotations

import torch
from torch import nn


class SE(nn.Module):
    def __init__(self, c: int, r: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(c, max(1, c // r), 1)
        self.fc2 = nn.Conv2d(max(1, c // r), c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(s))))


class Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.se = SE(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(x + self.se(y))


class Transition(nn.Module):
    """Two branches concatenated: ``a`` (3x3, stride 2) and ``b`` (pool + 1x1)."""

    def __init__(self, cin: int, ca: int, cb: int) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(cin, ca, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(ca), nn.ReLU())
        self.b = nn.Sequential(nn.AvgPool2d(2), nn.Conv2d(cin, cb, 1, bias=False), nn.BatchNorm2d(cb), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.a(x), self.b(x)], dim=1)


class Stage(nn.Module):
    def __init__(self, cin: int, c: int, blocks: int) -> None:
        super().__init__()
        self.t2 = Transition(cin, c // 2, c - c // 2)
        self.body = nn.Sequential(*[Block(c) for _ in range(blocks)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.t2(x))


class NestedNet(nn.Module):
    def __init__(self, num_classes: int = 10, width: int = 8) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.s1 = nn.Sequential(Block(width), Block(width))
        self.s2 = Stage(width, 2 * width, 2)
        self.s3 = Stage(2 * width, 4 * width, 1)
        self.head = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.s3(self.s2(self.s1(self.stem(x))))
        return self.head(x.mean((2, 3)))


def build(num_classes: int = 10, width: int = 8) -> NestedNet:
    return NestedNet(num_classes=num_classes, width=width)
