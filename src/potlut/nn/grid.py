"""Eval forward on the integer engine's fixed-point grid: the fake-quantized model computes
the engine's numbers, so both give the same class on every image.

The engine holds BatchNorm outputs, the residual stream and the logits as integers in units
of ``2^-F`` (:mod:`potlut.infer.program`), now each the floor of its exact real value. It
used to round them to nearest, and the float32 forward rounds at 2^-24 relative (sums of
4-bit unsigned or 5-bit codes need up to 38 bits): values near an activation threshold
landed on different sides and trained ResNet20s on the CIFAR sample changed class on up
to 8 of 761 images (float32 and float64 copies of the model agreed on every code there).
Two ways out: make the engine exact (int64 streams in every backend and the generated C),
or make the eval forward compute what the engine computes. The second is exact and cheap:
in eval mode a quantized layer convolves in float64, which sums its power-of-two products
without rounding; :class:`GridBatchNorm2d` applies the file's float32 fold in float64 and
floors to ``2^-F``; the model's output is floored too. Floor on the grid changes no
decision of a quantizer (its midpoints lie on the grid), so only sums of rounded values,
the residual adds, see it, exactly as in the engine. Training stays float32.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn

from potlut import schemes
from potlut.errors import PotlutError
from potlut.infer.plut import accumulator_shift, fixed_codebook
from potlut.infer.program import frac_bits_for
from potlut.nn.layers import QUANT_LAYERS, quantizers

INT32_MAX = 2**31 - 1
ENGINE_EXACT = (schemes.EXACT, schemes.INT8)


def floor_grid(y: torch.Tensor, frac_bits: int) -> torch.Tensor:
    """``floor(y * 2^F) / 2^F`` in float64, saturated to int32 units as the engine does."""
    u = torch.floor(y.double() * 2.0**frac_bits).clamp_(-INT32_MAX, INT32_MAX)
    return u * 2.0**-frac_bits


class GridBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` whose eval forward, on the grid, is the engine's requantization:
    ``floor((x * scale + shift) * 2^F)`` with the float32 ``(scale, shift)`` the file stores."""

    frac_bits: int | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or self.frac_bits is None:
            if self.eps == 0 and not self.training and x.device.type != "cpu":
                # folded (snap_batchnorm, to_torch): CUDA's batch_norm refuses eps 0, and
                # mean 0, variance 1 leave x * scale + shift
                return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
            return super().forward(x)
        from potlut.nn.export import fold_batchnorm  # export imports this module's users

        scale, shift = (torch.from_numpy(v).to(x.device, torch.float64).view(1, -1, 1, 1)
                        for v in fold_batchnorm(self))
        return floor_grid(x.double() * scale + shift, self.frac_bits)


@torch.no_grad()
def table_rounding(layer: nn.Module, xq: torch.Tensor, w: torch.Tensor, op) -> torch.Tensor | None:
    """What the layer's P-LUT adds to ``op(xq, w)`` by rounding its products, or None.

    Where full products could overflow the int32 accumulator (5-bit IOS-PoT), every table
    entry is ``round_half_up(product / 2^shift)`` (:func:`potlut.infer.plut.build_plut`);
    the same shift from the same codes, applied here per activation level ``L``:
    ``op(xq * [|xq| == L], sign(w) * (R(|w| L) - |w| L) / L)`` for the levels it changes.
    """
    aq, wq = layer.act_quant, layer.weight_quant
    facts = schemes.lookup(aq.scheme)
    if facts is None or facts.engine != schemes.EXACT:
        return None
    if wq is not None:
        ex = wq.export(layer.normalized_weight())
        stored = (np.asarray(ex.codebook, np.float64).astype(np.float32), ex.codes, ex.scheme)
    else:  # rebuilt from a file (potlut.nn.export.to_torch): the file's codes
        stored = getattr(layer, "stored_codes", None)
        if stored is None:
            return None
    wcb = fixed_codebook(stored[0], stored[2], "weight")
    acb = fixed_codebook(np.asarray(aq.export(torch.zeros(1)).codebook, np.float64)
                         .astype(np.float32), aq.scheme, "activation")
    codes = np.asarray(stored[1]).reshape(w.shape[0], -1)
    shift = accumulator_shift(wcb.values, int(acb.values.max(initial=0)), codes)
    if shift == 0:
        return None
    unit = 2.0 ** (wcb.unit_exp + acb.unit_exp + shift)
    aw, out = w.abs(), None
    for v in acb.values[acb.values > 0]:
        level = float(v) * 2.0**acb.unit_exp
        prod = aw * level
        delta = torch.floor(prod / unit + 0.5) * unit - prod
        if bool(delta.any()):
            part = op(torch.where(xq.abs() == level, xq, 0.0), torch.sign(w) * delta / level)
            out = part if out is None else out + part
    return out


def _act_codebooks(model: nn.Module) -> list[np.ndarray] | None:
    """Every quantized layer's input codebook as the file stores it (float32), or None when
    the engine cannot run the model exactly (a float layer, a non-grid BatchNorm, a scheme
    it rounds or refuses). A switchable model is judged at its active width."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and not isinstance(m, QUANT_LAYERS):
            return None
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and type(m) is not GridBatchNorm2d:
            return None
    for q in quantizers(model):
        facts = schemes.lookup(q.scheme)
        if facts is None or facts.engine not in ENGINE_EXACT:
            return None
    cbs = []
    for m in model.modules():
        if isinstance(m, QUANT_LAYERS):
            if m.act_quant is None:
                return None
            cb = m.act_quant.export(torch.zeros(1)).codebook
            cbs.append(np.asarray(cb, dtype=np.float64).astype(np.float32))
    return cbs


def set_grid(model: nn.Module, frac_bits: int | None) -> None:
    """Put every grid-aware part of ``model`` on the ``2^-frac_bits`` grid (None: off)."""
    model._grid_frac_bits = frac_bits
    for m in model.modules():
        if isinstance(m, (GridBatchNorm2d, *QUANT_LAYERS)):
            m.frac_bits = frac_bits


def _check_weight_codebooks(model: nn.Module) -> None:
    """Raise UnsupportedModelError where a weight codebook is one the engine refuses."""
    for m in model.modules():
        if isinstance(m, QUANT_LAYERS) and m.weight_quant is not None:
            wq = m.weight_quant
            cb = np.asarray(wq.export(m.normalized_weight()).codebook, np.float64)
            fixed_codebook(cb.astype(np.float32), wq.scheme, "weight")


@contextlib.contextmanager
def grid_off(model: nn.Module):
    """Evaluate ``model`` in float32 inside the block (the grid's float64 convolutions cost
    about 9x a float32 eval of ResNet20): for progress numbers during training, never for the
    numbers that must equal the engine's."""
    before = getattr(model, "_grid_disabled", False)
    model._grid_disabled = True
    try:
        yield model
    finally:
        model._grid_disabled = before


@torch.no_grad()
def _engage(model: nn.Module, args) -> None:
    """Forward pre-hook: in eval mode, the engine's ``F`` for the current quantizers."""
    off = model.training or getattr(model, "_grid_disabled", False)
    cbs = None if off else _act_codebooks(model)
    try:
        frac_bits = None if cbs is None else frac_bits_for(cbs)
        if frac_bits is not None:
            _check_weight_codebooks(model)
    except PotlutError:  # levels the engine cannot hold (IOS-PoT above 5 bits), or weights
        # that cannot be exported yet (SQ part way through its schedule)
        frac_bits = None
    set_grid(model, frac_bits)


def _floor_output(model: nn.Module, args, out):
    """Forward hook: the logits on the grid (the engine floors its last requantization)."""
    f = getattr(model, "_grid_frac_bits", None)
    if f is None or not torch.is_tensor(out):
        return out
    return floor_grid(out, f)


def swap_batchnorms(model: nn.Module) -> None:
    """Replace every ``nn.BatchNorm2d`` of ``model`` (in place) by a GridBatchNorm2d twin."""
    for name, m in list(model.named_modules()):
        if type(m) is nn.BatchNorm2d:
            g = GridBatchNorm2d(m.num_features, m.eps, m.momentum, m.affine,
                                m.track_running_stats).to(m.weight.device
                                                          if m.weight is not None else "cpu")
            g.load_state_dict(m.state_dict())
            g.train(m.training)
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, g)


def engine_grid(model: nn.Module) -> nn.Module:
    """Make ``model``'s eval forward compute the integer engine's numbers (in place)."""
    swap_batchnorms(model)
    model.register_forward_pre_hook(_engage)
    model.register_forward_hook(_floor_output)
    return model
