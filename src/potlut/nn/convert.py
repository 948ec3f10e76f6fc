"""``quantize(model, spec, calibration)``: turn any plain PyTorch CNN into its quantized form.

Every ``nn.Conv2d`` and ``nn.Linear`` is replaced by its quantized twin. The first and
last of them (in registration order) get 8-bit fixed point with a power-of-two step by
default (METHODS §1.6); the rest get ``spec.scheme`` at ``spec.bits``, unless a per-layer
override says otherwise. The input model is left untouched.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from potlut.errors import PotlutConfigError
from potlut.nn.grid import engine_grid
from potlut.nn.layers import QuantConv2d, QuantLinear, quant_layers, quantizers
from potlut.quant import registry
from potlut.quant.iospot import check_bits

WEIGHT_NORMS = ("auto", "channel", "layer")


@dataclass
class LayerSpec:
    """Scheme and bit-widths of one layer."""

    scheme: str
    bits_w: int
    bits_a: int
    act_signed: bool = True


@dataclass
class QuantSpec:
    """How to quantize a model; defaults follow the paper (4-bit IOS-PoT, 8-bit ends).

    ``overrides`` maps a layer name (as in ``named_modules``) to a :class:`LayerSpec`.
    ``act_signed=False`` spends every activation bit on the magnitude (post-ReLU inputs);
    the first layer's input (the image) stays signed.
    """

    scheme: str = "iospot"
    bits: int = 4
    act_bits: int | None = None
    first_last_bits: int = 8
    first_last_scheme: str = "fixedpoint"
    quantize_first_last: bool = True
    act_signed: bool = True
    # "auto": per output channel for convolutions at >= 4-bit weights, per layer below (measured
    # on real CIFAR: channel +0.5 at 4 bits, -0.7 at 3); "channel"; "layer" (METHODS §1.1)
    weight_norm: str = "auto"
    overrides: dict[str, LayerSpec] = field(default_factory=dict)

    def validate(self) -> None:
        registry.get(self.scheme)
        registry.get(self.first_last_scheme)
        check_bits(self.bits)
        check_bits(self.act_bits if self.act_bits is not None else self.bits)
        check_bits(self.first_last_bits)
        if self.weight_norm not in WEIGHT_NORMS:
            raise PotlutConfigError(
                f"weight_norm must be one of {', '.join(WEIGHT_NORMS)}, got {self.weight_norm!r}")

    def layer(self, name: str, position: str) -> LayerSpec | None:
        """Spec of the layer called ``name`` at ``position`` (first / middle / last)."""
        if name in self.overrides:
            return self.overrides[name]
        if position in ("first", "last"):
            if not self.quantize_first_last:
                return None
            signed = True if position == "first" else self.act_signed
            b = self.first_last_bits
            return LayerSpec(self.first_last_scheme, b, b, signed)
        act_bits = self.act_bits if self.act_bits is not None else self.bits
        return LayerSpec(self.scheme, self.bits, act_bits, self.act_signed)


def _positions(names: list[str]) -> dict[str, str]:
    pos = {n: "middle" for n in names}
    if names:
        pos[names[0]] = "first"
        pos[names[-1]] = "last"
    return pos


def convert(model: nn.Module, spec: QuantSpec | None = None) -> nn.Module:
    """Return a quantized deep copy of ``model``; ``model`` itself is not modified.

    Its eval forward computes the integer engine's numbers (:mod:`potlut.nn.grid`)."""
    spec = spec or QuantSpec()
    spec.validate()
    unknown = set(spec.overrides) - {n for n, _ in model.named_modules()}
    if unknown:
        raise PotlutConfigError(f"overrides name layers that do not exist: {sorted(unknown)}")
    qmodel = copy.deepcopy(model)
    targets = [
        n for n, m in qmodel.named_modules() if type(m) in (nn.Conv2d, nn.Linear)
    ]
    positions = _positions(targets)
    for name in targets:
        ls = spec.layer(name, positions[name])
        if ls is None:
            continue
        info = registry.get(ls.scheme)
        wq = registry.make(ls.scheme, ls.bits_w, "weight", True)
        aq = registry.make(ls.scheme, ls.bits_a, "act", ls.act_signed)
        old = qmodel.get_submodule(name)
        cls = QuantConv2d if isinstance(old, nn.Conv2d) else QuantLinear
        new = cls.from_float(old, wq, aq, info.weight_norm)
        # per channel only where a BatchNorm absorbs the scale (not the classifier)
        new.wn_per_channel = cls is QuantConv2d and (
            spec.weight_norm == "channel" or (spec.weight_norm == "auto" and ls.bits_w >= 4))
        _set_submodule(qmodel, name, new)
    return engine_grid(qmodel)


def _set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


@torch.no_grad()
def calibrate(qmodel: nn.Module, batch: torch.Tensor) -> None:
    """MSE-optimal power-of-two start for every quantizer (METHODS §1.2), then BN re-estimation.

    Pass 1 runs ``batch`` with quantization switched off, so each activation quantizer sees
    the FP32 activations and each weight quantizer its normalized weight. Weight
    normalization changes the scale of every conv output, so the FP32 BatchNorm running
    statistics no longer fit; both passes use batch statistics, and pass 2 (quantization
    on) re-estimates the running statistics, so the converted model is usable in eval mode
    before any QAT step.
    """
    bns = [m for m in qmodel.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    was_training = qmodel.training
    momenta = [bn.momentum for bn in bns]
    batch = batch.to(next(qmodel.parameters()).device)
    qmodel.train()
    try:
        calibrate_scales(qmodel, batch)
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average: one pass gives the batch statistics
        qmodel(batch)
    finally:
        for bn, mom in zip(bns, momenta, strict=True):
            bn.momentum = mom
        qmodel.train(was_training)


def calibrate_scales(qmodel: nn.Module, batch: torch.Tensor) -> None:
    """Pass 1 of :func:`calibrate` alone: every quantizer's MSE-optimal power-of-two scale
    from one run of ``batch`` with quantization off, in the model's current mode (in eval
    mode: for the BatchNorm statistics it already has, which it keeps)."""
    qs = quantizers(qmodel)
    try:
        for q in qs:
            q.calibrating = True
        qmodel(batch.to(next(qmodel.parameters()).device))
    finally:
        for q in qs:
            q.calibrating = False


def quantize(model: nn.Module, config: QuantSpec | None = None,
             calibration: torch.Tensor | None = None) -> nn.Module:
    """Quantized copy of ``model``: :func:`convert`, then :func:`calibrate` on ``calibration``.

    Without a calibration batch the quantizers keep their default scales (only useful when
    trained scales are loaded next, e.g. from a checkpoint).
    """
    qmodel = convert(model, config)
    if calibration is not None:
        calibrate(qmodel, calibration)
    return qmodel


def layer_bits(qmodel: nn.Module) -> dict[str, tuple[int, int]]:
    """``{layer name: (weight bits, activation bits)}`` of every quantized layer."""
    return {n: (m.bits_w, m.bits_a) for n, m in quant_layers(qmodel)}
