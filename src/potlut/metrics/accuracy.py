"""Top-k accuracy over a data set."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset


def topk_correct(logits: torch.Tensor, target: torch.Tensor, ks=(1, 5)) -> list[int]:
    """Number of samples whose label is among the top-k logits, for each k."""
    maxk = min(max(ks), logits.shape[1])
    top = logits.topk(maxk, dim=1).indices
    hit = top == target[:, None]
    return [int(hit[:, : min(k, maxk)].any(dim=1).sum()) for k in ks]


@torch.no_grad()
def evaluate(
    model: nn.Module, data: Dataset, batch_size: int = 512, device: str | torch.device = "cpu"
) -> tuple[float, float]:
    """(Top-1, Top-5) accuracy in percent; the model is put in eval mode and restored."""
    was_training = model.training
    model.eval()
    n = c1 = c5 = 0
    try:
        for x, y in DataLoader(data, batch_size=batch_size):
            x, y = x.to(device), y.to(device)
            a, b = topk_correct(model(x), y)
            c1, c5, n = c1 + a, c5 + b, n + len(y)
    finally:
        model.train(was_training)
    return 100.0 * c1 / max(n, 1), 100.0 * c5 / max(n, 1)
