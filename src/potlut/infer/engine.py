"""The integer engine: runs a .potlut file's program with the fast kernels.

``IntEngine(path_or_graph)`` lowers the file's graph (:func:`potlut.infer.program.lower`),
prepares every layer once (signed-code P-LUT rows, non-zero weight lists, requantization
constants) and runs batches of float images to int32 logits in units of ``2^-F``. The C
backends run the whole network in one native call per batch (AVX-512 / AVX2 / NEON /
scalar, :mod:`potlut.infer.kernels.native`); ``numba`` and ``c-layers`` run layer by layer
with NumPy integer code between them. Results equal
:func:`potlut.infer.reference.run_reference` element for element.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from potlut.compress.graph import ModelGraph
from potlut.errors import PotlutDataError
from potlut.infer.kernels import NATIVE, Backend, get_backend, resolve
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
    Reshape,
    Shortcut,
    lower,
    requant_np,
)


def load_program(source: str | Path | ModelGraph | Program) -> Program:
    """A :class:`Program` from a .potlut path, a graph, or a program (returned as is)."""
    if isinstance(source, Program):
        return source
    if isinstance(source, ModelGraph):
        return lower(source)
    from potlut.compress import load

    return lower(load(source))


def code_dtype(act: ActQuant) -> np.dtype:
    return np.dtype(np.uint8) if act.fmt == "sm" else np.dtype(np.int16)


def encode(code: np.ndarray, neg: np.ndarray, act: ActQuant) -> np.ndarray:
    if act.fmt == "sm":
        return (code | (neg.astype(np.int64) << act.kbits)).astype(np.uint8)
    return np.where(neg, -code, code).astype(np.int16)


def quantize_input(x: np.ndarray, act: ActQuant) -> np.ndarray:
    """Float image -> codes (nearest level, ties to the larger), as the float model does."""
    mag = np.abs(x) if act.signed else np.maximum(x, 0)
    code = np.searchsorted(act.mids, mag.astype(np.float64), side="right")
    neg = (x < 0) & (code > 0) if act.signed else np.zeros(x.shape, bool)
    return encode(code, neg, act)


@dataclass
class LayerPlan:
    """Everything a kernel needs for one layer, prepared once."""

    step: Layer
    geo: np.ndarray  # int64 [16]: N placeholder, C, H, W, O, G, KH, KW, SH, SW, PH, PW, ...
    mode: int  # 0 P-LUT, 1 int8
    wq: np.ndarray  # [O, K] signed codes (uint8) or values (int16)
    nz_k: np.ndarray  # int32, non-zero weights of each output channel
    nz_off: np.ndarray  # int32 [O + 1]
    rows: np.ndarray  # int32 [S, A]: signed P-LUT rows (P-LUT mode), else [1, 1]
    M: np.ndarray
    B: np.ndarray
    R: np.ndarray
    out_fmt: int  # -1 no codes, 0 sign-magnitude uint8, 1 int16 values
    thr: np.ndarray
    kbits: int
    signed: bool
    extra: Any = None  # backend-specific data (C: shuffle rows, segments)
    acc_thr: bool = False  # codes straight from the accumulator (program.AccThresholds)
    flip: np.ndarray | None = None
    up: np.ndarray | None = None
    wn: np.ndarray | None = None


def plan_layer(st: Layer) -> LayerPlan:
    """Prepare a layer: flattened weights, zero-skip lists, signed rows, constants."""
    C, H, W = st.in_shape
    OH, OW = (st.out_shape[1], st.out_shape[2]) if len(st.out_shape) == 3 else (1, 1)
    geo = np.array([0, C, H, W, st.out_channels, st.groups, *st.kernel, *st.stride,
                    *st.padding, *st.dilation, OH, OW], dtype=np.int64)
    n_out = st.out_channels
    codes = st.w_codes.reshape(n_out, -1)
    if st.mode == "plut":
        wq = st.signed_weight_codes().reshape(n_out, -1)
        rows = st.plut.signed_rows(st.act.signed)
        mode = 0
    else:
        wq = st.weight_ints().reshape(n_out, -1).astype(np.int16)
        rows = np.zeros((1, 1), np.int32)
        mode = 1
    nz = st.w_values[codes.astype(np.int64)] != 0  # code 0 is not zero for DoReFa/LQ-Net
    nz_k = np.nonzero(nz.reshape(-1))[0] % codes.shape[1] if codes.size else np.zeros(0)
    nz_off = np.concatenate([[0], np.cumsum(nz.sum(axis=1))])
    act = st.out_act
    fast = st.acc_thr is not None
    flip, up, wn = (st.acc_thr.flip, st.acc_thr.up, st.acc_thr.wn) if fast else (None,) * 3
    return LayerPlan(
        step=st, geo=geo, mode=mode, wq=np.ascontiguousarray(wq),
        nz_k=nz_k.astype(np.int32), nz_off=nz_off.astype(np.int32), rows=rows,
        M=st.requant.M.copy(), B=st.requant.B.copy(), R=st.requant.r.copy(),
        out_fmt=-1 if act is None else (0 if act.fmt == "sm" else 1),
        thr=np.zeros(1, np.int64) if act is None else act.thresholds.copy(),
        kbits=0 if act is None else act.kbits, signed=bool(act is not None and act.signed),
        acc_thr=fast, flip=flip, up=up, wn=wn,
    )


def _pool(x: np.ndarray, st: Pool) -> np.ndarray:
    N, C, H, W = x.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = st.kernel, st.stride, st.padding, st.dilation
    OH = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    OW = (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    if st.kind == "avg" and (kh, kw) == (H, W) and (ph, pw) == (0, 0):
        s = x.reshape(N, C, -1).sum(axis=2, dtype=np.int64).reshape(N, C, 1, 1)
    else:
        fill = 0 if st.kind == "avg" else np.iinfo(np.int64).min
        p = np.full((N, C, H + 2 * ph, W + 2 * pw), fill, dtype=np.int64)
        p[:, :, ph:ph + H, pw:pw + W] = x
        wins = [p[:, :, i * dh:i * dh + sh * (OH - 1) + 1:sh, j * dw:j * dw + sw * (OW - 1) + 1:sw]
                for i in range(kh) for j in range(kw)]
        if st.kind == "max":
            return np.maximum.reduce(wins).astype(np.int32)
        s = np.add.reduce(wins, dtype=np.int64)
    d = st.divisor or kh * kw
    return (s // d).astype(np.int32)


def _shortcut(x: np.ndarray, st: Shortcut) -> np.ndarray:
    if st.stride > 1:
        x = x[:, :, ::st.stride, ::st.stride]
    N, C, H, W = x.shape
    out = np.zeros((N, C + st.pad, H, W), dtype=np.int32)
    out[:, st.pad // 2:st.pad // 2 + C] = x
    return out


class IntEngine:
    """Integer-only inference of a .potlut model (see the module docstring).

    One engine is not meant to be called from several threads at once: the C backend
    reuses its layer buffers from call to call (per batch size).
    """

    def __init__(self, source: str | Path | ModelGraph | Program, backend: str = "auto",
                 threads: int | None = None, kernels: str = "auto") -> None:
        """Native backends: ``threads`` split a batch's images (default: the physical cores
        available); ``kernels="lut"`` keeps to table lookups (see ``native.KERNELS``)."""
        self.program = load_program(source)
        name = resolve(backend)
        self.native = None
        self.plans: dict[str, LayerPlan] = {}
        if name in NATIVE:
            from potlut.infer.kernels.native import NativeNet

            self.native = NativeNet(self.program, name, threads, kernels)
            self.backend = self.native
            return
        self.backend: Backend = get_backend(name)
        for st in self.program.steps:
            if isinstance(st, Layer):
                plan = plan_layer(st)
                plan.extra = self.backend.prepare(plan)
                self.plans[st.name] = plan

    @property
    def scale(self) -> float:
        """Real value of one logit unit (``2^-F``)."""
        return self.program.scale

    def check_input(self, x: Any, finite: bool = True) -> np.ndarray:
        """Float32 ``[N, *in_shape]`` array, or :class:`PotlutDataError` saying what is wrong
        (``finite=False``: NaN / infinity left to the native runner, which refuses them)."""
        if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor, without importing torch
            x = x.detach().cpu().numpy()
        x = np.asarray(x)
        want = tuple(self.program.in_shape)
        if x.dtype.kind != "f":
            raise PotlutDataError(f"input dtype {x.dtype} is not floating point (the engine "
                                  "quantizes float images itself)")
        if x.ndim != len(want) + 1 or tuple(x.shape[1:]) != want:
            raise PotlutDataError(f"input shape {list(x.shape)} does not match the model's "
                                  f"[N, {', '.join(map(str, want))}]")
        x = np.ascontiguousarray(x, dtype=np.float32)
        if finite and not np.all(np.isfinite(x)):
            raise PotlutDataError("input contains NaN or infinite values")
        return x

    def run(self, x: Any, keep: bool = False) -> np.ndarray | dict[str, np.ndarray]:
        """int32 logits ``[N, ...]`` (units of ``2^-F``) of float images ``x``."""
        x = self.check_input(x, finite=self.native is None)
        if self.native is not None:
            return self.native.run(x, keep)
        N = x.shape[0]
        env: dict[str, np.ndarray] = {}
        be = self.backend
        for st in self.program.steps:
            if isinstance(st, Layer):
                res = env[st.residual] if st.residual is not None else None
                y, codes = be.run_layer(self.plans[st.name], env[st.src], res, N)
                if st.out_fixed is not None:
                    env[st.out_fixed] = y.reshape(N, *st.out_shape)
                if st.out_codes is not None:
                    env[st.out_codes] = codes.reshape(N, *st.out_shape)
            elif isinstance(st, InputQuant):
                env[st.dst] = quantize_input(x, st.act)
            elif isinstance(st, Quantize):
                env[st.dst] = be.quantize(env[st.src], st.act)
            elif isinstance(st, Affine):
                env[st.dst] = requant_np(env[st.src], st.requant).astype(np.int32)
            elif isinstance(st, Relu):
                env[st.dst] = np.maximum(env[st.src], 0)
            elif isinstance(st, Add):
                s = env[st.a].astype(np.int64) + env[st.b]
                env[st.dst] = np.clip(s, -INT32_MAX, INT32_MAX).astype(np.int32)
            elif isinstance(st, Pool):
                env[st.dst] = _pool(env[st.src], st)
            elif isinstance(st, Shortcut):
                env[st.dst] = _shortcut(env[st.src], st)
            elif isinstance(st, Reshape):
                env[st.dst] = env[st.src].reshape(N, *st.shape)
            elif isinstance(st, Cat):
                env[st.dst] = np.concatenate([env[s] for s in st.srcs], axis=st.dim)
            else:  # pragma: no cover
                raise TypeError(type(st).__name__)
        # layer outputs live in buffers the backend reuses on the next call: hand out copies
        if keep:
            return {k: np.array(v) for k, v in env.items()}
        outs = [env[o] for o in self.program.outputs]
        if len(outs) == 1:
            return np.array(outs[0])
        return np.concatenate([o.reshape(N, -1) for o in outs], 1)

    def predict(self, x: Any, batch_size: int = 256) -> np.ndarray:
        """Float logits (int32 logits times ``2^-F``), run in batches."""
        x = self.check_input(x)
        outs = [self.run(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
        return np.concatenate(outs).astype(np.float64) * self.scale
