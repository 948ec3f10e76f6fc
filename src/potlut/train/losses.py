"""Distribution loss with a learnable coefficient (METHODS §2).

``D_l = mean((w_n - q(w_n))^2) / mean(w_n^2)`` per quantized layer, ``L = L_task + lambda *
sum_l D_l``. Modes: ``off``; ``fixed`` (``lambda`` constant); ``learnable`` (default): the
coefficient adapts every step so that the regularizer's gradient on the normalized weights is
``RATIO`` (1 %) of the task loss's gradient, ``lambda = RATIO * |g_task| / |g_D|``, with
``|g_task|`` a running mean over steps. It follows the quantization error through training
(the paper's description) and, being a bounded fraction of the task gradient, can never
dominate it. The fraction is measured, not guessed: on the real CIFAR sample (ResNet20,
3-bit, 20 QAT epochs, seed 0) 10 % cost 6.2 points against ``off`` (56.19 vs 62.44; the pull
toward the current level keeps weights from crossing to a better one), 1 % gave 62.29 and
0.1 % 62.65, both within one run's noise of ``off`` (README, "Accuracy on real images").
``uncertainty`` is the first form (``exp(-s) * sum D + s``, optimum ``lambda = 1 / sum D``):
its pull grows as the mismatch shrinks and it cost 4.5 points on real CIFAR images, so it is
kept only for the ablation.

Departure from a literal reading: ``q(w_n)`` is a constant target (no gradient). With the
STE, ``d q/d w_n = 1`` inside the clipping range, which would make the gradient of ``D_l``
vanish exactly where the loss is meant to pull weights toward their levels. The clipping
scales are left to the task loss: the PACT-style ``d q/d alpha`` is only an approximation,
and with ``lambda`` in the hundreds it pushed an 8-bit scale the wrong way by two octaves.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from potlut.errors import PotlutConfigError
from potlut.nn.layers import quant_layers
from potlut.train import distributed as pdist

MODES = ("off", "fixed", "learnable", "uncertainty")
RATIO = 0.01  # learnable: |lambda * grad D| / |grad L_task| on the normalized weights
MOMENTUM = 0.9  # running mean of |grad L_task| over steps


def layer_mismatch(layer) -> torch.Tensor:
    """Scale-free quantization mismatch ``D_l`` of one quantized layer's weight.

    Reuses the weights of the layer's last training forward when there is one.
    """
    wn, q = _weights(layer)
    return ((wn - q) ** 2).mean() / (wn.detach() ** 2).mean().clamp_min(1e-12)


def _weights(layer) -> tuple[torch.Tensor, torch.Tensor]:
    if layer.last_weights is not None:
        wn, q = layer.last_weights
        return wn, q.detach()  # the target: nearest levels at the current scale
    wn = layer.normalized_weight()
    with torch.no_grad():
        q = layer.weight_quant(wn)
    return wn, q


class DistributionLoss(nn.Module):
    """The regularizer; ``mode``: ``off``, ``fixed``, ``learnable`` (default), ``uncertainty``.

    ``lam`` is the fixed coefficient (``fixed``) or the start of ``exp(-s)`` (``uncertainty``).
    In ``learnable`` mode the task gradient is read by hooks on the normalized weights of each
    training step (the regularizer's own share subtracted), so one step's ``lambda`` uses the
    running mean of the previous steps; the first step has ``lambda = 0``. Under DDP the hooks
    see this rank's gradient only: :meth:`end_step` averages it over the ranks before taking
    its norm, so ``lambda`` is the single-process one of the global batch on every rank.
    """

    def __init__(self, mode: str = "learnable", lam: float = 1.0, ratio: float = RATIO) -> None:
        super().__init__()
        if mode not in MODES:
            raise PotlutConfigError(f"distribution loss mode must be one of {MODES}, got {mode!r}")
        if lam <= 0:
            raise PotlutConfigError(f"distribution loss lambda must be > 0, got {lam}")
        self.mode = mode
        self.ratio = ratio
        self.ramp = 1.0  # learnable: share of ``ratio`` in force (set per epoch by a ramp)
        self.s = nn.Parameter(torch.tensor(-math.log(lam)), requires_grad=mode == "uncertainty")
        self.register_buffer("task_norm", torch.tensor(0.0))  # running mean |grad L_task|
        self.register_buffer("current", torch.tensor(0.0 if mode == "learnable" else lam))
        # |grad L_task|^2 of the last step, summed by the hooks (-1: none yet); a buffer, so a
        # checkpoint written after a step holds it and a resumed run takes the same steps
        self.register_buffer("pending", torch.tensor(-1.0))
        self._task_grads: list[torch.Tensor] = []  # this step's task gradients, from the hooks

    def set_ramp(self, epoch: int, epochs: int) -> None:
        """Half-cosine ramp of the learnable ratio from 0 to ``ratio`` over the stage, so the
        pull toward the levels acts late, when weights should settle on them instead of
        oscillating across a threshold (Nagel et al. 2022's annealed dampening loss)."""
        self.ramp = (1 - math.cos(math.pi * (epoch + 0.5) / epochs)) / 2

    @property
    def lam(self) -> float:
        """Current coefficient."""
        if self.mode == "uncertainty":
            return float(torch.exp(-self.s.detach()))
        return float(self.current)

    def forward(self, model: nn.Module) -> torch.Tensor:
        if self.mode == "off":
            return self.s.new_zeros(())
        layers = [m for _, m in quant_layers(model) if m.weight_quant is not None]
        if not layers:
            return self.s.new_zeros(())
        if self.mode == "learnable":
            return self._adaptive(layers)
        total = torch.stack([layer_mismatch(m) for m in layers]).sum()
        if self.mode == "fixed":
            return torch.exp(-self.s.detach()) * total
        return torch.exp(-self.s) * total + self.s

    def _hook(self, own: torch.Tensor):
        """Backward hook keeping ``grad - own`` (the task part of a weight's gradient)."""

        def hook(grad: torch.Tensor) -> None:
            with torch.no_grad():
                self._task_grads.append(grad - own)  # into ``pending`` by end_step

        return hook

    def end_step(self) -> None:
        """After a backward: ``pending = |g_task|^2`` of the step, ``g_task`` averaged over the
        ranks (as DDP averages the weights' gradients); every rank must call it. The training
        loop calls it after every backward, so a checkpoint's ``pending`` holds the last step."""
        if not self._task_grads:
            return
        grads, world = list(self._task_grads), pdist.world_size()
        self._task_grads.clear()
        if world > 1:
            flat = torch.cat([g.reshape(-1) for g in grads])
            torch.distributed.all_reduce(flat)
            grads = [flat / world]
        self.pending.zero_()
        for g in grads:
            self.pending.add_((g**2).sum())

    def _adaptive(self, layers) -> torch.Tensor:
        """``lambda * sum D`` with ``lambda = ratio * |g_task| / |g_D|`` (see the class doc)."""
        pairs = [_weights(m) for m in layers]
        total = torch.stack([
            ((wn - q) ** 2).mean() / (wn.detach() ** 2).mean().clamp_min(1e-12) for wn, q in pairs
        ]).sum()
        wns = [wn for wn, _ in pairs]
        if not total.requires_grad:  # evaluation: report the value at the last coefficient
            return self.current * total
        self.end_step()  # a backward outside the training loop leaves its gradients here
        if float(self.pending) >= 0:  # the task gradient of the previous step, from the hooks
            norm = self.pending.sqrt()
            first = float(self.task_norm) == 0.0
            ema = MOMENTUM * self.task_norm + (1 - MOMENTUM) * norm
            self.task_norm.copy_(norm if first else ema)
            self.pending.fill_(-1.0)
        # measured on the normalized (non-leaf) weights: a hook on a leaf would outlive the step
        inner = [wn for wn in wns if wn.grad_fn is not None]
        if not inner:
            return self.current * total
        grads = torch.autograd.grad(total, inner, retain_graph=True)
        reg_norm = torch.sqrt(sum((g.detach() ** 2).sum() for g in grads))
        lam = self.ratio * self.ramp * self.task_norm / reg_norm.clamp_min(1e-12)
        self.current.copy_(lam)
        self.pending.zero_()
        for wn, g in zip(inner, grads, strict=True):
            wn.register_hook(self._hook((lam * g).detach()))
        return lam.detach() * total
