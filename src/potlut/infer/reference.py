"""The integer reference: the program of :mod:`potlut.infer.program` in plain int64 PyTorch.

No tables, no fusion, no kernels: products are int64 multiplications of the signed code
values (``±value[code]``), rounded per product by the layer's table shift exactly as the
P-LUT entries are, summed; every other step is the written formula. The fast engine must
equal this element for element.
"""

from __future__ import annotations

import numpy as np
import torch

from potlut.infer.plut import INT32_MAX
from potlut.infer.program import (
    ActQuant,
    Add,
    Affine,
    Cat,
    InputQuant,
    Layer,
    Pool,
    Program,
    Quantize,
    Relu,
    Requant,
    Reshape,
    Shortcut,
)


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).to(torch.int64)


def encode_codes(code: torch.Tensor, neg: torch.Tensor, act: ActQuant) -> torch.Tensor:
    """Codes in the buffer format: ``neg << k | code`` (IOS-PoT) or ``±code`` (fixed)."""
    if act.fmt == "sm":
        return code + neg.to(torch.int64) * (2**act.kbits)
    return torch.where(neg, -code, code)


def decode_values(codes: torch.Tensor, act: ActQuant) -> torch.Tensor:
    """Signed integer values ``±value[code]`` of a codes buffer (int64)."""
    if act.fmt == "sm":
        code, neg = codes % (2**act.kbits), codes >= 2**act.kbits
    else:
        code, neg = codes.abs(), codes < 0
    mag = _t(act.values)[code]
    return torch.where(neg, -mag, mag)


def quantize_float(x: torch.Tensor, act: ActQuant) -> torch.Tensor:
    """Float input -> codes: nearest level (ties to the larger), as the float quantizer."""
    x = x.to(torch.float64)
    mag = x.abs() if act.signed else x.clamp_min(0)
    code = torch.searchsorted(torch.from_numpy(act.mids), mag, right=True)
    neg = (x < 0) & (code > 0) if act.signed else torch.zeros_like(code, dtype=torch.bool)
    return encode_codes(code, neg, act)


def quantize_fixed(y: torch.Tensor, act: ActQuant) -> torch.Tensor:
    """Fixed tensor -> codes: count the integer thresholds at or below ``|y|``."""
    mag = y.abs() if act.signed else y.clamp_min(0)
    code = torch.searchsorted(_t(act.thresholds), mag.contiguous(), right=True)
    neg = (y < 0) & (code > 0) if act.signed else torch.zeros_like(code, dtype=torch.bool)
    return encode_codes(code, neg, act)


def requant(x: torch.Tensor, rq: Requant) -> torch.Tensor:
    """``sat(floor((x * M + B) / 2^r))`` per channel (axis 1)."""
    shape = (1, -1) + (1,) * (x.dim() - 2)
    M, B = _t(rq.M).view(shape), _t(rq.B).view(shape)
    d = (2 ** _t(rq.r)).view(shape)
    y = torch.div(x * M + B, d, rounding_mode="floor")
    return y.clamp(-INT32_MAX, INT32_MAX)


def im2col(a: torch.Tensor, kernel, stride, padding, dilation) -> torch.Tensor:
    """``[N, C, H, W] -> [N, C*kh*kw, OH*OW]`` (int64, zero padding)."""
    N, C, H, W = a.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    OH = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    OW = (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    p = torch.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=a.dtype)
    p[:, :, ph:ph + H, pw:pw + W] = a
    cols = []
    for i in range(kh):
        for j in range(kw):
            r0, c0 = i * dh, j * dw
            cols.append(p[:, :, r0:r0 + sh * (OH - 1) + 1:sh, c0:c0 + sw * (OW - 1) + 1:sw])
    return torch.stack(cols, dim=2).reshape(N, C * kh * kw, OH * OW)


def accumulate(layer: Layer, codes: torch.Tensor) -> torch.Tensor:
    """The layer's int32 accumulators ``[N, O, OH*OW]``: sum of rounded products."""
    a = decode_values(codes, layer.act)
    if layer.op == "linear":
        a = a.reshape(a.shape[0], -1, 1, 1)
    w = _t(layer.weight_ints())  # [O, Cg, kh, kw]
    n_out, G = w.shape[0], layer.groups
    Cg, Og = a.shape[1] // G, n_out // G
    shift = layer.plut.shift if layer.plut is not None else 0
    accs = []
    for g in range(G):
        cols = im2col(a[:, g * Cg:(g + 1) * Cg], layer.kernel, layer.stride, layer.padding,
                      layer.dilation)
        wg = w[g * Og:(g + 1) * Og].reshape(Og, -1)
        if shift == 0:
            accs.append(torch.matmul(wg, cols))
        else:  # every product rounded on its own: sign * round_half_up(|w| * |a| / 2^shift)
            half = 2 ** (shift - 1)
            a_abs, a_sgn = cols.abs(), cols.sign()
            per_o = []
            for o in range(Og):
                t = (wg[o].abs()[None, :, None] * a_abs + half) >> shift
                per_o.append((t * a_sgn * wg[o].sign()[None, :, None]).sum(dim=1))
            accs.append(torch.stack(per_o, dim=1))
    acc = torch.cat(accs, dim=1)
    if acc.numel() and int(acc.abs().max()) > INT32_MAX:
        raise AssertionError(f"layer {layer.module}: accumulator left int32")  # by design
    return acc


def _pool(x: torch.Tensor, st: Pool) -> torch.Tensor:
    N, C, H, W = x.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = st.kernel, st.stride, st.padding, st.dilation
    OH = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    OW = (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    fill = 0 if st.kind == "avg" else -(2**62)
    p = torch.full((N, C, H + 2 * ph, W + 2 * pw), fill, dtype=torch.int64)
    p[:, :, ph:ph + H, pw:pw + W] = x
    wins = [p[:, :, i * dh:i * dh + sh * (OH - 1) + 1:sh, j * dw:j * dw + sw * (OW - 1) + 1:sw]
            for i in range(kh) for j in range(kw)]
    stack = torch.stack(wins, dim=0)
    if st.kind == "max":
        return stack.max(dim=0).values
    d = st.divisor or kh * kw
    return torch.div(2 * stack.sum(dim=0) + d, 2 * d, rounding_mode="floor")


def _shortcut(x: torch.Tensor, st: Shortcut) -> torch.Tensor:
    if st.stride > 1:
        x = x[:, :, ::st.stride, ::st.stride]
    N, C, H, W = x.shape
    before, after = st.pad // 2, st.pad - st.pad // 2
    z0 = torch.zeros((N, before, H, W), dtype=x.dtype)
    z1 = torch.zeros((N, after, H, W), dtype=x.dtype)
    return torch.cat([z0, x, z1], dim=1)


def run_reference(prog: Program, x: torch.Tensor | np.ndarray,
                  keep: bool = False) -> dict[str, torch.Tensor] | torch.Tensor:
    """Run ``prog`` on float images ``x`` ``[N, C, H, W]``; int64 logits (``[N, ...]``).

    With ``keep`` returns every buffer (codes and fixed tensors) by name.
    """
    x = torch.as_tensor(np.asarray(x, dtype=np.float32))
    N = x.shape[0]
    env: dict[str, torch.Tensor] = {"x_float": x}
    for st in prog.steps:
        if isinstance(st, InputQuant):
            env[st.dst] = quantize_float(x, st.act)
        elif isinstance(st, Quantize):
            env[st.dst] = quantize_fixed(env[st.src], st.act)
        elif isinstance(st, Layer):
            acc = accumulate(st, env[st.src])  # [N, O, L]
            y = requant(acc, st.requant).reshape(N, *st.out_shape)
            if st.residual is not None:
                y = (y + env[st.residual]).clamp(-INT32_MAX, INT32_MAX)
            if st.relu:
                y = y.clamp_min(0)
            if st.out_fixed is not None:
                env[st.out_fixed] = y
            if st.out_codes is not None:
                env[st.out_codes] = quantize_fixed(y, st.out_act)
        elif isinstance(st, Affine):
            env[st.dst] = requant(env[st.src], st.requant)
        elif isinstance(st, Relu):
            env[st.dst] = env[st.src].clamp_min(0)
        elif isinstance(st, Add):
            env[st.dst] = (env[st.a] + env[st.b]).clamp(-INT32_MAX, INT32_MAX)
        elif isinstance(st, Pool):
            env[st.dst] = _pool(env[st.src], st)
        elif isinstance(st, Shortcut):
            env[st.dst] = _shortcut(env[st.src], st)
        elif isinstance(st, Reshape):
            env[st.dst] = env[st.src].reshape(N, *st.shape)
        elif isinstance(st, Cat):
            env[st.dst] = torch.cat([env[s] for s in st.srcs], dim=st.dim)
        else:  # pragma: no cover - every step type is handled above
            raise TypeError(type(st).__name__)
    if keep:
        return env
    outs = [env[o] for o in prog.outputs]
    return outs[0] if len(outs) == 1 else torch.cat([o.reshape(N, -1) for o in outs], dim=1)
