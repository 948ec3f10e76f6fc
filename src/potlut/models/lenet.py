"""LeNet-5 (LeCun et al. 1998) with BatchNorm: the MNIST baseline for 28x28 inputs.

conv 5x5 (6, padded to keep 28x28) -> max-pool -> conv 5x5 (16) -> max-pool -> fc 120 -> fc 84
-> fc. BatchNorm after each conv is the usual modern addition (it also gives QAT its
requantization point); 61,470 weights, 61,728 parameters (the classic net: 61,706),
~99 % Top-1 on MNIST in FP32 in the literature.
"""

from __future__ import annotations

from torch import nn


class LeNet5(nn.Module):
    """LeNet-5 for 28x28 inputs (the 400-wide flatten needs 28x28, or 32x32 with ``pad=0``)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, pad: int = 2) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5, padding=pad, bias=False), nn.BatchNorm2d(6),
            nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5, bias=False), nn.BatchNorm2d(16),
            nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(16 * 5 * 5, 120), nn.ReLU(inplace=True),
            nn.Linear(120, 84), nn.ReLU(inplace=True), nn.Linear(84, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))
