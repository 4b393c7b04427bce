"""A Fashion-MNIST classifier with residual stages, written the way a user writes one (plain torch).

The compress benchmark (``benchmarks/bench_compress.py``) trains it once and hands it to
``hwtune.compress`` as ``benchmarks/models/fmnist_residual.py:build``. Three stages of two basic
residual blocks (12, 24, 48 channels at 28x28, 14x14, 7x7), a 1x1 projection where a stage changes
width or resolution: 99 K parameters and 11.4 M multiply-accumulates per 1x28x28 image (sized so that
training it to convergence fits the benchmark's budget on a shared 2-core machine).
"""

from __future__ import annotations

from torch import Tensor, nn


class Block(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus the input (projected by a strided 1x1 conv where shapes differ)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + self.shortcut(x))


class FashionResNet(nn.Module):
    def __init__(self, widths: tuple[int, ...] = (12, 24, 48), blocks: int = 2, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU())
        stages = []
        cin = widths[0]
        for i, w in enumerate(widths):
            layers = [Block(cin, w, 1 if i == 0 else 2)] + [Block(w, w) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*layers))
            cin = w
        self.s1, self.s2, self.s3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.s3(self.s2(self.s1(self.stem(x))))
        return self.fc(self.pool(x).flatten(1))


def build() -> nn.Module:
    """The benchmark's baseline architecture (untrained)."""
    return FashionResNet()
