"""What a training run needs from a data set: train/test datasets plus their shape."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import Dataset, TensorDataset


@dataclass
class DataBundle:
    """Train and test splits with the facts models and reports need."""

    name: str
    train: Dataset
    test: Dataset
    num_classes: int
    in_shape: tuple[int, int, int]  # (C, H, W)

    @property
    def in_channels(self) -> int:
        return self.in_shape[0]

    def calibration_batch(self, n: int = 256) -> torch.Tensor:
        """The first ``n`` training inputs (deterministic) for quantizer calibration."""
        if isinstance(self.train, TensorDataset):
            return self.train.tensors[0][:n]
        xs = [self.train[i][0] for i in range(min(n, len(self.train)))]
        return torch.stack(xs)


def channel_stats(train_x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std (``[1, C, 1, 1]``) of ``[N, C, H, W]`` training images."""
    dims = (0, 2, 3)
    return train_x.mean(dims, keepdim=True), train_x.std(dims, keepdim=True).clamp_min(1e-6)


def standardize(train_x: torch.Tensor, test_x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel zero mean / unit variance with the *training* statistics."""
    mean, std = channel_stats(train_x)
    return (train_x - mean) / std, (test_x - mean) / std
