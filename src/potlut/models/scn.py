"""A Self-Cure-Network-style model for facial expressions (Wang et al., CVPR 2020).

ResNet18 (ImageNet stem) gives a 512-d feature ``x_i`` per image. A self-attention head
scores each sample, ``alpha_i = sigmoid(w_a . x_i + b_a)``, and scales its logits:
``logits_i = alpha_i * (W x_i + b)``. Plain cross-entropy on these logits is SCN's
*logit-weighted cross-entropy*: uncertain (low-alpha) samples get flat logits, so they
push the model less.

Rank regularization (the SCN loss term, :func:`rank_regularization`): sort the batch's
``alpha`` descending, take the mean of the top ``beta = 70%`` (high group) and of the rest
(low group), and penalize ``max(0, margin - (mean_high - mean_low))`` with margin 0.15,
so that the head really separates confident from uncertain samples. The model exposes it
as ``aux_loss()`` (computed from the last training forward), which the training loop adds
to the task loss with weight ``rr_weight`` (1.0, as in the reference code).

Not included: SCN's relabeling of low-importance samples (it rewrites data-set labels
during training) and its MS-Celeb-1M pre-training; the backbone trains from scratch.
Every weight is a plain Conv2d / Linear, so ``convert`` quantizes the model like any
other; the classifier ``fc`` is registered last and so is the 8-bit last layer.
"""

from __future__ import annotations

import torch
from torch import nn

from potlut.models.resnet import resnet18


def rank_regularization(alpha: torch.Tensor, beta: float = 0.7,
                        margin: float = 0.15) -> torch.Tensor:
    """``max(0, margin - (mean of top beta*N alphas - mean of the rest))``; 0 for N < 2."""
    a = alpha.reshape(-1)
    n = a.numel()
    if n < 2:
        return a.sum() * 0.0
    k = min(max(int(round(beta * n)), 1), n - 1)
    ranked = a.sort(descending=True).values
    return torch.clamp(margin - (ranked[:k].mean() - ranked[k:].mean()), min=0.0)


class SCN(nn.Module):
    """ResNet18 backbone + sample-attention head + attention-scaled classifier."""

    def __init__(self, num_classes: int = 7, in_channels: int = 3, dropout: float = 0.0,
                 beta: float = 0.7, margin: float = 0.15, rr_weight: float = 1.0) -> None:
        super().__init__()
        self.backbone = resnet18(num_classes, in_channels)
        self.backbone.fc = nn.Identity()
        self.dropout = nn.Dropout(dropout)
        self.alpha = nn.Sequential(nn.Linear(512, 1), nn.Sigmoid())
        self.fc = nn.Linear(512, num_classes)
        self.beta, self.margin, self.rr_weight = beta, margin, rr_weight
        self.last_alpha: torch.Tensor | None = None

    def forward(self, x):
        feat = self.dropout(self.backbone(x))
        alpha = self.alpha(feat)
        self.last_alpha = alpha if self.training else None
        return alpha * self.fc(feat)

    def __getstate__(self) -> dict:
        """Copies (``convert`` deep-copies models) never carry the last batch's graph."""
        state = self.__dict__.copy()
        state["last_alpha"] = None
        return state

    def aux_loss(self) -> torch.Tensor | float:
        """Weighted rank-regularization loss of the last training batch (0 in eval)."""
        if self.last_alpha is None or self.rr_weight == 0:
            return 0.0
        loss = rank_regularization(self.last_alpha, self.beta, self.margin)
        self.last_alpha = None  # one use per forward, and no graph kept alive
        return self.rr_weight * loss


def scn(num_classes: int = 7, in_channels: int = 3) -> SCN:
    return SCN(num_classes, in_channels)
