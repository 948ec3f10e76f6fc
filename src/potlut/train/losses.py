"""Distribution loss with a learnable coefficient (METHODS §2).

``D_l = mean((w_n - q(w_n))^2) / mean(w_n^2)`` per quantized layer, ``L = L_task + lambda *
sum_l D_l``. Modes: ``off``; ``fixed`` (``lambda`` constant); ``ratio``: the coefficient adapts
every step so that the regularizer's gradient on the normalized weights is a fixed fraction
(``RATIO``, 1 %) of the task loss's gradient, ``lambda = ratio * |g_task| / |g_D|``, with
``|g_task|`` a running mean over steps: it follows the quantization error and can never
dominate; ``learnable`` (default): the same, with the fraction itself learned each step from
the cosine between the task gradient and the regularizer's (within [0, 10 %]), so the pull acts
while it agrees with the task and fades when it opposes it. It starts at (practically) 0, so
the regularizer must earn its pull. Measured on the real CIFAR sample (ResNet20, 20 + 20
epochs, paired on one FP32 start per seed, README "Accuracy on real images"): started at 1 %
(the form before), the learned fraction fell to 0 within two QAT epochs and scored +0.07 +-
0.30 (4-bit, 9 seeds) and -0.37 +- 0.27 (3-bit, 9 seeds) against ``off``: its first-epoch
pull cost; started at 0 it stayed below 0.1 %, beat the 1 % start at 3 bits on every seed
(+0.80 +- 0.20, 4 seeds) and is level with ``off`` (see the README for the numbers); a fixed
10 % had cost 6.2 points (the pull toward the current level keeps weights from crossing to a
better one). ``uncertainty`` is the first form (``exp(-s) * sum D + s``, optimum
``lambda = 1 / sum D``): its pull grows as the mismatch shrinks and it cost 4.5 points on
real CIFAR images, so it is kept only for the ablation.

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

MODES = ("off", "fixed", "learnable", "ratio", "uncertainty")
RATIO = 0.01  # ratio mode: |lambda grad D| / |grad L_task|, on the normalized weights
# learnable mode: the share's start, practically 0: it grows only while the two gradients agree
# (positive, as a ratio must be; the rows of the README's table were measured with this value)
LEARNABLE_START = 1e-9
MOMENTUM = 0.9  # running mean of |grad L_task| over steps
HYPER_LR = 0.05  # learnable: step of the ratio per unit of cos(g_task, g_D)
HYPER_MAX = 0.1  # learnable: the ratio never exceeds this (the regularizer never dominates)


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

    def __init__(self, mode: str = "learnable", lam: float = 1.0,
                 ratio: float | None = None) -> None:
        super().__init__()
        if mode not in MODES:
            raise PotlutConfigError(f"distribution loss mode must be one of {MODES}, got {mode!r}")
        if lam <= 0:
            raise PotlutConfigError(f"distribution loss lambda must be > 0, got {lam}")
        if ratio is None:  # the mode's default: a fixed share, or where the learned one starts
            ratio = LEARNABLE_START if mode == "learnable" else RATIO
        if not ratio > 0:
            raise PotlutConfigError(f"distribution loss ratio must be > 0, got {ratio}")
        self.mode = mode
        self.ratio = ratio
        self.ramp = 1.0  # learnable: share of ``ratio`` in force (set per epoch by a ramp)
        self.s = nn.Parameter(torch.tensor(-math.log(lam)), requires_grad=mode == "uncertainty")
        self.register_buffer("task_norm", torch.tensor(0.0))  # running mean |grad L_task|
        self.register_buffer("current",
                             torch.tensor(0.0 if mode in ("learnable", "ratio") else lam))
        # |grad L_task|^2 of the last step, summed by the hooks (-1: none yet); a buffer, so a
        # checkpoint written after a step holds it and a resumed run takes the same steps
        self.register_buffer("pending", torch.tensor(-1.0))
        self._task_grads: list[tuple[int, torch.Tensor]] = []  # this step's, from the hooks
        # learnable: the ratio in force, learned; and the direction of this step's g_D
        self.register_buffer("ratio_now", torch.tensor(float(ratio)))
        self.register_buffer("reg_dir", torch.zeros(0))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """``reg_dir`` takes the checkpoint's size; older checkpoints lack both of the learned
        ratio's buffers and keep this module's."""
        for name in ("ratio_now", "reg_dir"):
            if prefix + name not in state_dict:
                state_dict[prefix + name] = getattr(self, name)
        self.reg_dir = torch.empty_like(state_dict[prefix + "reg_dir"])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

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
        if self.mode in ("learnable", "ratio"):
            return self._adaptive(layers)
        total = torch.stack([layer_mismatch(m) for m in layers]).sum()
        if self.mode == "fixed":
            return torch.exp(-self.s.detach()) * total
        return torch.exp(-self.s) * total + self.s

    def _hook(self, own: torch.Tensor, index: int):
        """Backward hook keeping ``grad - own`` (the task part of a weight's gradient)."""

        def hook(grad: torch.Tensor) -> None:
            with torch.no_grad():
                self._task_grads.append((index, grad - own))  # into ``pending`` by end_step

        return hook

    def end_step(self) -> None:
        """After a backward: ``pending = |g_task|^2`` of the step, ``g_task`` averaged over the
        ranks (as DDP averages the weights' gradients); every rank must call it. The training
        loop calls it after every backward, so a checkpoint's ``pending`` holds the last step."""
        if not self._task_grads:
            return
        ordered = sorted(self._task_grads, key=lambda t: t[0])  # layer order, as ``reg_dir``
        self._task_grads.clear()
        flat = torch.cat([g.reshape(-1) for _, g in ordered])
        world = pdist.world_size()
        if world > 1:
            torch.distributed.all_reduce(flat)
            flat = flat / world
        self.pending.copy_((flat**2).sum())
        if self.mode == "learnable" and self.reg_dir.numel() == flat.numel():
            # the ratio follows the agreement of this step's task gradient with the regularizer's
            # (Du et al. 2018, auxiliary losses weighted by gradient similarity): it grows
            # while the pull toward the levels also lowers the task loss, and decays to 0 when
            # it works against it (the one-step hypergradient's sign, Baydin et al. 2018)
            cos = (flat @ self.reg_dir) / (flat.norm() * self.reg_dir.norm()).clamp_min(1e-12)
            self.ratio_now.add_(HYPER_LR * cos).clamp_(0.0, HYPER_MAX)

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
        ratio = self.ratio_now if self.mode == "learnable" else self.ratio
        lam = ratio * self.ramp * self.task_norm / reg_norm.clamp_min(1e-12)
        self.current.copy_(lam)
        self.pending.zero_()
        if self.mode == "learnable":
            self.reg_dir = torch.cat([g.detach().reshape(-1) for g in grads])
        for i, (wn, g) in enumerate(zip(inner, grads, strict=True)):
            wn.register_hook(self._hook((lam * g).detach(), i))
        return lam.detach() * total
