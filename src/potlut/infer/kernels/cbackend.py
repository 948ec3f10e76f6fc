"""The C backend: ``plut_kernels.c`` compiled at first use into a user cache folder.

The library is built with the system C compiler (``$CC``, else ``cc``/``gcc``) into
``$POTLUT_CACHE_DIR`` (default ``$XDG_CACHE_HOME/potlut`` or ``~/.cache/potlut``), named by
a hash of the source and flags, written atomically so concurrent processes agree, and
loaded with ctypes. Where no compiler exists (or ``POTLUT_NO_C=1``) :func:`c_available`
is false and the engine falls back to numba. The AVX2 byte-shuffle kernel is chosen at
run time where the CPU has AVX2 and the layer's table rows fit (<= 16 signed activation
codes, products within int16: IOS-PoT up to 4 bits); other P-LUT layers use the scalar
gather loop in C.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SOURCE = Path(__file__).with_name("plut_kernels.c")
CFLAGS = ["-O3", "-std=c11", "-shared", "-fPIC", "-fno-strict-aliasing"]
TARGET_P = 1024  # pixels per GEMM chunk: images are grouped until about this many
INT16_MAX = 32767

_FIELDS = [(n, ctypes.c_int64) for n in
           "N C H W O G KH KW SH SW PH PW DH DW OH OW mode".split()]
_FIELDS += [("x", ctypes.c_void_p), ("wq", ctypes.c_void_p), ("nz_k", ctypes.c_void_p),
            ("nz_off", ctypes.c_void_p), ("rows", ctypes.c_void_p), ("n_act", ctypes.c_int64),
            ("rows16", ctypes.c_void_p), ("seg_end", ctypes.c_void_p),
            ("seg_off", ctypes.c_void_p), ("M", ctypes.c_void_p), ("B", ctypes.c_void_p),
            ("R", ctypes.c_void_p), ("res", ctypes.c_void_p), ("relu", ctypes.c_int64),
            ("out_y", ctypes.c_void_p), ("out_c", ctypes.c_void_p),
            ("code_fmt", ctypes.c_int64), ("thr", ctypes.c_void_p), ("n_thr", ctypes.c_int64),
            ("kbits", ctypes.c_int64), ("code_signed", ctypes.c_int64),
            ("cols", ctypes.c_void_p), ("acc", ctypes.c_void_p), ("pstride", ctypes.c_int64),
            ("chunk", ctypes.c_int64), ("acc_thr", ctypes.c_int64), ("flip", ctypes.c_void_p),
            ("up", ctypes.c_void_p), ("wn", ctypes.c_void_p), ("cnt", ctypes.c_void_p)]


class LayerArgs(ctypes.Structure):
    _fields_ = _FIELDS


def cache_dir() -> Path:
    env = os.environ.get("POTLUT_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "potlut"


def _compiler() -> str | None:
    for cc in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if cc and shutil.which(cc):
            return cc
    return None


def build_library(source: Path = SOURCE, deps: tuple[Path, ...] = (),
                  flags: tuple[str, ...] = ()) -> Path:
    """Compile ``source`` (once per version of it and ``deps``) and return the library's path."""
    src = source.read_bytes() + b"".join(d.read_bytes() for d in deps)
    cc = _compiler()
    if cc is None:
        raise OSError("no C compiler found (set CC)")
    cflags = [*CFLAGS, *flags]
    tag = hashlib.sha256(src + " ".join([cc, *cflags]).encode()).hexdigest()[:16]
    out = cache_dir() / f"{source.stem}_{tag}.so"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
    os.close(fd)
    try:
        subprocess.run([cc, *cflags, str(source), "-o", tmp], check=True,
                       capture_output=True, timeout=300)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


_lib: ctypes.CDLL | None = None
_lib_error: str | None = None


def load_library() -> ctypes.CDLL:
    """The kernels library (built if needed); ``OSError`` if it cannot be had."""
    global _lib, _lib_error
    if _lib is not None:
        return _lib
    if _lib_error is not None:
        raise OSError(_lib_error)
    try:
        if os.environ.get("POTLUT_NO_C"):
            raise OSError("POTLUT_NO_C is set")
        lib = ctypes.CDLL(str(build_library()))
    except (OSError, subprocess.SubprocessError) as exc:
        _lib_error = f"C kernels unavailable: {exc}"
        raise OSError(_lib_error) from None
    lib.potlut_layer.argtypes = [ctypes.POINTER(LayerArgs)]
    lib.potlut_layer.restype = ctypes.c_int64
    lib.potlut_has_avx2.restype = ctypes.c_int64
    lib.potlut_quantize.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p,
                                    ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64,
                                    ctypes.c_int64, ctypes.c_int64]
    lib.potlut_quantize.restype = None
    _lib = lib
    return lib


def c_available() -> bool:
    """Whether the C kernels can be built/loaded here."""
    try:
        load_library()
        return True
    except OSError:
        return False


@dataclass
class CPlan:
    """C-side data of one layer: mode, shuffle rows and int16 segments, and the args."""

    mode: int  # 0 shuffle, 1 gather, 2 int8
    rows16: np.ndarray
    seg_end: np.ndarray
    seg_off: np.ndarray
    calls: dict[int, tuple] = field(default_factory=dict)  # batch size -> (args, outputs)


def shuffle_rows(rows: np.ndarray) -> np.ndarray:
    """``[S, 64]`` bytes: each signed row's low bytes twice, then its high bytes twice."""
    S, A = rows.shape
    r = np.zeros((S, 16), np.int16)
    r[:, :A] = rows
    u = r.view(np.uint16)
    lo, hi = (u & 0xFF).astype(np.uint8), (u >> 8).astype(np.uint8)
    return np.ascontiguousarray(np.concatenate([lo, lo, hi, hi], axis=1))


def int16_segments(plan: Any) -> tuple[np.ndarray, np.ndarray]:
    """Split each channel's non-zero weights into runs whose worst int16 sum fits.

    A run's bound is the sum over its weights of the largest |product| in their rows; the
    kernel widens its int16 partial sums to int32 at the end of every run.
    """
    row_max = np.abs(plan.rows.astype(np.int64)).max(axis=1)
    ends: list[int] = []
    offs = [0]
    for o in range(plan.wq.shape[0]):
        lo, hi = int(plan.nz_off[o]), int(plan.nz_off[o + 1])
        bounds = row_max[plan.wq[o, plan.nz_k[lo:hi]]]
        total = 0
        for t, b in zip(range(lo, hi), bounds, strict=True):
            if total + int(b) > INT16_MAX:
                ends.append(t)
                total = 0
            total += int(b)
        if hi > lo:
            ends.append(hi)
        offs.append(len(ends))
    return np.array(ends, np.int32), np.array(offs, np.int32)


def _ptr(a: np.ndarray | None) -> int | None:
    return None if a is None else a.ctypes.data


class CBackend:
    """Fused layers in C: AVX2 shuffle P-LUT where the table fits, else scalar gather."""

    name = "c"

    def __init__(self) -> None:
        self.lib = load_library()
        self.avx2 = bool(self.lib.potlut_has_avx2())
        self._scratch: dict[str, np.ndarray] = {}
        self._run = self.lib.potlut_layer
        self._byref = ctypes.byref

    def prepare(self, plan: Any) -> CPlan:
        empty = np.zeros(1, np.int32)
        if plan.mode == 1:
            return CPlan(2, np.zeros((1, 64), np.uint8), empty, empty)
        fits = plan.rows.shape[1] <= 16 and int(np.abs(plan.rows).max(initial=0)) <= INT16_MAX
        if self.avx2 and fits:
            seg_end, seg_off = int16_segments(plan)
            return CPlan(0, shuffle_rows(plan.rows), seg_end, seg_off)
        return CPlan(1, np.zeros((1, 64), np.uint8), empty, empty)

    def _buf(self, name: str, nbytes: int) -> np.ndarray:
        """Scratch shared by all layers; kept alive by every call that points into it."""
        b = self._scratch.get(name)
        if b is None or b.nbytes < nbytes:
            b = np.zeros(max(nbytes, 1 << 16), np.uint8)
            self._scratch[name] = b
        return b

    def run_layer(self, plan: Any, x: np.ndarray, res: np.ndarray | None,
                  n: int) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Run one layer; output buffers are reused per (layer, batch size) across calls."""
        hit = plan.extra.calls.get(n)
        if hit is None:
            hit = plan.extra.calls[n] = self._make_call(plan, n)
        args, out_y, out_c, keep = hit
        x = np.ascontiguousarray(x)
        args.x = x.ctypes.data
        if res is not None:
            res = np.ascontiguousarray(res, dtype=np.int32)
            args.res = res.ctypes.data
        if self._run(self._byref(args)) != 0:
            raise RuntimeError("C kernel refused the layer")  # pragma: no cover
        return out_y, out_c

    def _make_call(self, plan: Any, n: int) -> tuple:
        st, cp = plan.step, plan.extra
        n_out, OHW = st.out_channels, st.out_hw
        chunk = max(1, min(n, TARGET_P // OHW))
        pstride = (chunk * OHW + 63) // 64 * 64
        item = 2 if cp.mode == 2 else 1
        cols = self._buf("cols", st.k * pstride * item)
        acc = self._buf("acc", (n_out // st.groups) * pstride * 4)
        cnt = self._buf("cnt", 2 * pstride * 4)
        out_y = np.empty((n, n_out, OHW), np.int32) if st.out_fixed is not None else None
        out_c = None
        if plan.out_fmt >= 0:
            out_c = np.empty((n, n_out, OHW), np.uint8 if plan.out_fmt == 0 else np.int16)
        g = plan.geo
        args = LayerArgs(
            n, *(int(v) for v in g[1:16]), cp.mode, None, plan.wq.ctypes.data,
            plan.nz_k.ctypes.data, plan.nz_off.ctypes.data, plan.rows.ctypes.data,
            plan.rows.shape[1], cp.rows16.ctypes.data, cp.seg_end.ctypes.data,
            cp.seg_off.ctypes.data, plan.M.ctypes.data, plan.B.ctypes.data, plan.R.ctypes.data,
            None, int(st.relu), _ptr(out_y), _ptr(out_c), plan.out_fmt,
            plan.thr.ctypes.data, plan.thr.size, plan.kbits, int(plan.signed),
            cols.ctypes.data, acc.ctypes.data, pstride, chunk, int(plan.acc_thr),
            _ptr(plan.flip), _ptr(plan.up), _ptr(plan.wn), cnt.ctypes.data,
        )
        return args, out_y, out_c, (cols, acc, cnt)

    def quantize(self, y: np.ndarray, act: Any) -> np.ndarray:
        y = np.ascontiguousarray(y, dtype=np.int32)
        out = np.empty(y.shape, np.uint8 if act.fmt == "sm" else np.int16)
        self.lib.potlut_quantize(y.ctypes.data, y.size, out.ctypes.data,
                                 0 if act.fmt == "sm" else 1, act.thresholds.ctypes.data,
                                 act.thresholds.size, act.kbits, int(act.signed))
        return out
