"""ShuffleNetV2 1.0x (Ma et al. 2018): channel split, depthwise convs, channel shuffle.

Stages of 4/8/4 units with 116/232/464 channels after a 24-channel 3x3/2 stem and a
3x3/2 max-pool, then a 1x1 conv to 1024 and a linear classifier. With 1000 classes: the
published 2,278,604 parameters. Channel split and shuffle are tensor ops (chunk, view,
transpose), so every weight lives in a plain Conv2d / Linear that ``convert`` can quantize.
"""

from __future__ import annotations

import torch
from torch import nn


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave the channels of ``groups`` equal groups."""
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1,
             relu: bool = True) -> list[nn.Module]:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return layers


class InvertedResidual(nn.Module):
    """One ShuffleNetV2 unit; stride 2 units process both halves and double the channels."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        half = cout // 2
        if stride > 1:
            self.branch1 = nn.Sequential(
                *_conv_bn(cin, cin, 3, stride, groups=cin, relu=False),
                *_conv_bn(cin, half, 1),
            )
        else:
            self.branch1 = nn.Sequential()
        b2_in = cin if stride > 1 else half
        self.branch2 = nn.Sequential(
            *_conv_bn(b2_in, half, 1),
            *_conv_bn(half, half, 3, stride, groups=half, relu=False),
            *_conv_bn(half, half, 1),
        )

    def forward(self, x):
        if self.stride == 1:
            a, b = x.chunk(2, dim=1)
            out = torch.cat((a, self.branch2(b)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    """ShuffleNetV2 with the given stage repeats and output channels."""

    def __init__(self, repeats=(4, 8, 4), channels=(24, 116, 232, 464, 1024),
                 num_classes: int = 1000, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(*_conv_bn(in_channels, channels[0], 3, 2))
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin, stages = channels[0], []
        for n, cout in zip(repeats, channels[1:4], strict=True):
            units = [InvertedResidual(cin, cout, 2)]
            units += [InvertedResidual(cout, cout, 1) for _ in range(n - 1)]
            stages.append(nn.Sequential(*units))
            cin = cout
        self.stage2, self.stage3, self.stage4 = stages
        self.conv5 = nn.Sequential(*_conv_bn(cin, channels[4], 1))
        self.fc = nn.Linear(channels[4], num_classes)

    def forward(self, x):
        x = self.maxpool(self.conv1(x))
        x = self.conv5(self.stage4(self.stage3(self.stage2(x))))
        return self.fc(x.mean((2, 3)))


def shufflenet_v2_x1_0(num_classes: int = 1000, in_channels: int = 3) -> ShuffleNetV2:
    return ShuffleNetV2(num_classes=num_classes, in_channels=in_channels)
