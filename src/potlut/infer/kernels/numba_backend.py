"""The numba backend: :mod:`potlut.infer.kernels.numba_kernels` behind the Backend calls."""

from __future__ import annotations

from typing import Any

import numpy as np

from potlut.infer.kernels import numba_kernels as nk

_EMPTY32 = np.zeros((1, 1, 1), np.int32)
_NO_THR = (np.zeros(1, np.int32), np.zeros((1, 1), np.int32))


class NumbaBackend:
    """Gather-loop P-LUT and int8 layers compiled by numba (cached on disk)."""

    name = "numba"

    def prepare(self, plan: Any) -> Any:
        return None

    def run_layer(self, plan: Any, x: np.ndarray, res: np.ndarray | None,
                  n: int) -> tuple[np.ndarray | None, np.ndarray | None]:
        st = plan.step
        geo = plan.geo.copy()
        geo[0] = n
        n_out, P = st.out_channels, st.out_hw
        x4 = x.reshape(n, *st.in_shape)
        cols = np.empty((st.k, P), dtype=x.dtype)
        acc = np.empty(P, dtype=np.int32)
        has_y = st.out_fixed is not None
        out_y = np.empty((n, n_out, P), np.int32) if has_y else _EMPTY32
        if plan.out_fmt >= 0:
            out_c = np.empty((n, n_out, P), np.uint8 if plan.out_fmt == 0 else np.int16)
        else:
            out_c = np.zeros((1, 1, 1), np.uint8)
        r3 = res.reshape(n, n_out, P) if res is not None else _EMPTY32
        flip, up = (plan.flip, plan.up) if plan.acc_thr else _NO_THR
        wn = plan.wn if plan.acc_thr and plan.wn is not None else _NO_THR[1]
        nk.conv_layer(x4, geo, plan.mode, plan.wq, plan.nz_k, plan.nz_off, plan.rows,
                      plan.M, plan.B, plan.R, r3, res is not None, st.relu, out_y, has_y,
                      out_c, plan.out_fmt, plan.thr, plan.kbits, plan.signed, cols, acc,
                      plan.acc_thr, flip, up, wn, plan.acc_thr and plan.wn is not None)
        return (out_y if has_y else None), (out_c if plan.out_fmt >= 0 else None)

    def quantize(self, y: np.ndarray, act: Any) -> np.ndarray:
        out = np.empty(y.shape, np.uint8 if act.fmt == "sm" else np.int16)
        nk.quantize_fixed(np.ascontiguousarray(y), out, act.thresholds,
                          0 if act.fmt == "sm" else 1, act.kbits, act.signed)
        return out
