"""PROFIT: progressive freezing of the most unstable layers during QAT (on any quantizer).

Paper: Park & Yoo, "PROFIT: A Novel Training Method for sub-4-bit MobileNet Models",
ECCV 2020 (and the authors' code, github.com/EunhyeokPark/PROFIT).

PROFIT is a training procedure, not a level set: ``--scheme profit`` means IOS-PoT
trained with PROFIT's progressive freezing, ``profit:SCHEME`` any registered quantizer
trained with it (:func:`potlut.schemes.parse_method`). Tables call it "IOS-PoT +
progressive freezing", not PROFIT: of the paper's method only the AIWQ-ranked freezing is
built; its sampling phase, its three phases with fresh optimizers and its bit-width
step-down (8 -> 5 -> 4 -> target bits) are not (docs/fairness.md).

Follows:
- §3 AIWQ metric (activation instability induced by weight quantization): for every
  quantized conv, the output of the current step is compared with the output of the
  same (quantized) input under the *previous* step's quantized weight, channel by
  channel, as the KL divergence between two Gaussians with the channels' means and
  standard deviations; values above 1 are dropped as outliers (authors' code).
- §4 progressive freezing: the QAT epochs are split into three equal phases; during the
  first the metric is measured; at its end the conv layers are ranked by AIWQ and the
  top third is frozen; at the end of the second phase the next third is frozen too.
  Freezing stops the updates of a layer's weight and bias (weight decay included); its
  quantizer scales and the BatchNorm keep training, as in the authors' code.

Departures: the metric is the plain mean over the measured steps (the authors use an
exponential average with 0.999, made for ImageNet's thousands of steps an epoch); the
phases share one learning-rate schedule (the fit's) instead of restarting a cosine
schedule per phase; no teacher network and no BN-only stabilization epochs.

Mechanics: measurement uses forward hooks on the quantized convs; freezing uses
post-accumulate-grad hooks that drop the gradient (``grad = None``), so the optimizer
(SGD skips such parameters) and its checkpoint stay unchanged. The freezer's state is a
small dict (``state_dict``) that the caller saves next to the QAT checkpoint, so a
resumed run re-freezes the same layers.
"""

from __future__ import annotations

import math

import torch
from torch import nn

AIWQ_OUTLIER = 1.0


def quantized_convs(model: nn.Module) -> dict[str, nn.Conv2d]:
    """Quantized convs (duck-typed: a conv with a weight quantizer), so quant needs no nn."""
    return {n: m for n, m in model.named_modules()
            if isinstance(m, nn.Conv2d) and getattr(m, "weight_quant", None) is not None}


def gaussian_kl(mean_p, std_p, mean_q, std_q) -> torch.Tensor:
    """``KL(N(mean_p, std_p) || N(mean_q, std_q))`` element-wise (authors' formula)."""
    return (torch.log(std_q / std_p)
            + (std_p**2 + (mean_p - mean_q) ** 2) / (2 * std_q**2) - 0.5)


def channel_stats(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of a conv output (N, C, H, W)."""
    t = y.transpose(0, 1).reshape(y.shape[1], -1)
    return t.mean(1), t.std(1)


def aiwq(out: torch.Tensor, out_old: torch.Tensor) -> float:
    """Mean over channels of ``KL(current || previous)``; NaN when no channel varies."""
    m, s = channel_stats(out)
    mo, so = channel_stats(out_old)
    ok = (s > 0) & (so > 0)
    if not bool(ok.any()):
        return math.nan
    return float(gaussian_kl(m[ok], s[ok], mo[ok], so[ok]).mean())


class ProgressiveFreezer:
    """Measures AIWQ during the first third of QAT and freezes layers at 1/3 and 2/3."""

    def __init__(self, model: nn.Module, epochs: int, phases: int = 3) -> None:
        self.model = model
        self.epochs = int(epochs)
        self.phases = int(phases)
        self.convs = quantized_convs(model)
        self.metric_sum = {n: 0.0 for n in self.convs}
        self.metric_n = {n: 0 for n in self.convs}
        self.frozen: list[str] = []
        self.order: list[str] = []
        self._prev: dict[str, torch.Tensor] = {}
        self._measure_hooks: list = []
        self._freeze_hooks: dict[str, list] = {}

    # -- schedule --------------------------------------------------------------------------
    def boundaries(self) -> list[int]:
        """Epochs after which a group is frozen (1/3 and 2/3 of the run by default)."""
        return sorted({max(1, round(self.epochs * i / self.phases)) for i in range(1, self.phases)})

    def group(self, i: int) -> list[str]:
        """Layer names frozen at boundary ``i`` (0-based): the i-th slice of the ranking."""
        n = len(self.order)
        lo, hi = int(n * i / self.phases), int(n * (i + 1) / self.phases)
        return self.order[lo:hi]

    def metric(self) -> dict[str, float]:
        """Mean AIWQ of every conv measured so far (0 where nothing was measured)."""
        return {n: self.metric_sum[n] / self.metric_n[n] if self.metric_n[n] else 0.0
                for n in self.convs}

    # -- hooks -----------------------------------------------------------------------------
    def attach(self) -> None:
        """Start measuring (if still in the first phase) and re-apply any frozen layers."""
        for n in self.frozen:
            self._freeze(n)
        if not self.order and not self._measure_hooks:
            for name, m in self.convs.items():
                self._measure_hooks.append(m.register_forward_hook(self._measure(name)))

    def detach(self) -> None:
        """Remove every hook this freezer installed (frozen layers become trainable)."""
        for h in self._measure_hooks:
            h.remove()
        self._measure_hooks.clear()
        for hs in self._freeze_hooks.values():
            for h in hs:
                h.remove()
        self._freeze_hooks.clear()
        self._prev.clear()

    def _measure(self, name: str):
        def hook(m, inp, out) -> None:
            if not m.training or not torch.is_grad_enabled():
                return
            with torch.no_grad():
                w_now = m.quantized_weight().detach()
                old = self._prev.get(name)
                if old is not None and old.shape == w_now.shape:
                    x = m.quantize_input(inp[0].detach())
                    out_old = m._conv_forward(x, old, m.bias)
                    v = aiwq(out.detach(), out_old)
                    if math.isfinite(v) and v <= AIWQ_OUTLIER:
                        self.metric_sum[name] += v
                        self.metric_n[name] += 1
                self._prev[name] = w_now

        return hook

    def _freeze(self, name: str) -> None:
        if name in self._freeze_hooks:
            return
        m = self.convs[name]

        def drop(p: torch.Tensor) -> None:
            p.grad = None

        self._freeze_hooks[name] = [
            p.register_post_accumulate_grad_hook(drop)
            for p in (m.weight, m.bias) if p is not None and p.requires_grad
        ]
        if name not in self.frozen:
            self.frozen.append(name)

    # -- the training callback -------------------------------------------------------------
    def on_epoch_end(self, epoch: int, log=None) -> None:
        """``fit``'s ``on_epoch_end``: rank after the first phase, freeze at each boundary."""
        bounds = self.boundaries()
        if epoch not in bounds:
            return
        if not self.order:
            metric = self.metric()
            self.order = sorted(self.convs, key=lambda n: (-metric[n], n))
            for h in self._measure_hooks:
                h.remove()
            self._measure_hooks.clear()
            self._prev.clear()
        for n in self.group(bounds.index(epoch)):
            self._freeze(n)

    def catch_up(self, finished_epochs: int) -> None:
        """Apply every boundary up to ``finished_epochs`` (a run resumed after a kill)."""
        for b in self.boundaries():
            if b <= finished_epochs:
                self.on_epoch_end(b)

    def state_dict(self) -> dict:
        """JSON-able state: measured metric, ranking and frozen layers."""
        return {"metric_sum": self.metric_sum, "metric_n": self.metric_n,
                "order": self.order, "frozen": self.frozen, "epochs": self.epochs}

    def load_state_dict(self, state: dict) -> None:
        self.metric_sum.update({k: float(v) for k, v in state["metric_sum"].items()
                                if k in self.convs})
        self.metric_n.update({k: int(v) for k, v in state["metric_n"].items() if k in self.convs})
        self.order = [n for n in state["order"] if n in self.convs]
        self.frozen = [n for n in state["frozen"] if n in self.convs]


def frozen_params(model: nn.Module, names: list[str]) -> list[nn.Parameter]:
    """The parameters PROFIT stops updating for the given layer names (for tests/reports)."""
    mods = dict(model.named_modules())
    return [p for n in names for p in (mods[n].weight, mods[n].bias) if p is not None]

