"""A small CNN for 8x8 (digits) and 28x28 (MNIST-format) inputs: three convs, GAP, FC."""

from __future__ import annotations

from torch import nn


def _conv_bn_relu(cin: int, cout: int, stride: int) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


class SmallCNN(nn.Module):
    """conv(16) -> conv(32, /2) -> conv(64, /2) -> global average pool -> linear.

    Works for any input size; on 8x8 the pooled map is 2x2, on 28x28 it is 7x7.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 16) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            *_conv_bn_relu(in_channels, w, 1),
            *_conv_bn_relu(w, 2 * w, 2),
            *_conv_bn_relu(2 * w, 4 * w, 2),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * w, num_classes)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))
