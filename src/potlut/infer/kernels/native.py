"""The whole-network C runner: ``plut_net.c`` (built at first use) executing a :mod:`netplan`.

One ctypes call runs every step of the program on a batch, images split between threads.
The instruction set is a backend name: ``avx512`` (F/BW/VBMI permutes), ``avx2`` (byte
shuffles), ``scalar`` (one table read per product), ``neon`` (aarch64 only; checked under
QEMU by the tests through :func:`build_harness`); ``c`` is the best one this CPU runs.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from potlut.infer.kernels.cbackend import build_library
from potlut.infer.kernels.netplan import NetPlan, build_plan, physical_cores

HERE = Path(__file__).parent
SOURCE = HERE / "plut_net.c"
DEPS = (HERE / "plut_net_body.h",)
HARNESS = HERE / "plut_net_main.c"
ISAS = {"scalar": 0, "avx2": 1, "avx512": 2, "neon": 3}
NATIVE = ("c", *ISAS)
# "auto": shift-add where the weights are powers of two with exact products, else tables;
# "lut": table lookups (permutes / shuffles / gathers) everywhere
KERNELS = {"auto": 0, "lut": 1}
# kernel ids of plut_net.c (K_*), by name
KERNEL_NAMES = ("gather", "int8", "shift-add", "vpshufb16", "vpshufb8", "vpermw", "vpermb",
                "tbl16", "tbl8", "shift-add8", "lut-oc", "shift-add32")

_lib: ctypes.CDLL | None = None


def load() -> ctypes.CDLL:
    """The runner library (built once per source version); ``OSError`` if it cannot be."""
    global _lib
    if _lib is None:
        if os.environ.get("POTLUT_NO_C"):
            raise OSError("POTLUT_NO_C is set")
        try:
            path = build_library(SOURCE, DEPS, ("-pthread",))
        except subprocess.SubprocessError as exc:
            raise OSError(f"C runner did not build: {exc}") from None
        lib = ctypes.CDLL(str(path))
        lib.potlut_net_run.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                       ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                       ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
                                       ctypes.c_void_p]
        lib.potlut_net_run.restype = ctypes.c_int64
        lib.potlut_net_kernels.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p]
        lib.potlut_net_kernels.restype = ctypes.c_int64
        lib.potlut_net_kernels1.argtypes = lib.potlut_net_kernels.argtypes
        lib.potlut_net_kernels1.restype = ctypes.c_int64
        lib.potlut_net_isa_supported.argtypes = [ctypes.c_int64]
        lib.potlut_net_isa_supported.restype = ctypes.c_int64
        _lib = lib
    return _lib


def supported_isas() -> list[str]:
    """Instruction sets of the runner this machine executes (empty without a compiler)."""
    try:
        lib = load()
    except OSError:
        return []
    return [k for k, v in ISAS.items() if lib.potlut_net_isa_supported(v)]


def best_isa() -> str:
    isas = supported_isas()
    for k in ("avx512", "avx2", "neon", "scalar"):
        if k in isas:
            return k
    raise OSError("the C runner is not available here")


class NativeNet:
    """A program's plan bound to the C runner, one instruction set, ``threads`` threads.

    ``kernels``: "auto" (shift-add where the weights are powers of two) or "lut" (table
    lookups alone). ``phased``: single images on 8x8 maps take phased rows (default: under
    AVX-512, where they are built by permutes). ``compact``: an image's buffers share bytes
    by liveness (default; ``run(keep=True)`` then runs a twin whose buffers all stay).
    """

    def __init__(self, prog: Any, isa: str = "c", threads: int | None = None,
                 kernels: str = "auto", phased: bool | None = None,
                 compact: bool = True) -> None:
        from potlut.errors import PotlutConfigError

        if isa == "c":
            isa = best_isa()
        if isa not in ISAS:
            raise PotlutConfigError(f"unknown instruction set {isa!r}")
        self.lib = load()
        if not self.lib.potlut_net_isa_supported(ISAS[isa]):
            raise PotlutConfigError(f"this CPU (or build) cannot run the {isa} kernels")
        self.isa = isa
        self.name = isa
        self.threads = physical_cores() if threads is None else max(1, int(threads))
        self.prog = prog
        # phased rows on 8x8 maps pay where prep builds them by permutes (AVX-512); any
        # instruction set runs either plan exactly (the tests force them on the others)
        phased = isa == "avx512" if phased is None else phased
        # buffers sharing bytes by liveness; run(keep=True) reads every buffer back, so it
        # runs a twin whose buffers all have bytes of their own (made on first use)
        self.plan: NetPlan = build_plan(prog, phased=phased, compact=compact)
        self._twin_args = (prog, isa, threads, kernels, phased)
        self._keeper: NativeNet | None = None if compact else self
        if kernels not in KERNELS:
            raise PotlutConfigError(f"unknown kernel policy {kernels!r}; choose one of: "
                                    f"{', '.join(KERNELS)}")
        self.plan.words[12] = KERNELS[kernels]
        self.stride = self.plan.arena_bytes
        self._arena = np.zeros(0, np.uint8)
        self._base = 0  # the arena's 64-byte aligned address
        # one-call buffers (input copy, outputs) with their addresses: reading an array's
        # address through numpy costs about 1 us, a third of a small model's call
        self._cap = 0
        self._xin = self._out = np.zeros(0, np.float32)
        self._xaddr = 0
        self._in_shape = tuple(int(v) for v in prog.in_shape)
        self._run = self.lib.potlut_net_run
        self._isa_id = ISAS[isa]
        # per-call constants: the plan's address, output specs, the output pointer array
        self._words = self.plan.words.ctypes.data
        bufs = [self.plan.bufs[b] for b in self.plan.outputs]
        self._out_specs = [(b.elems, b.np_dtype) for b in bufs]
        self._out_shape = bufs[0].shape
        self._ptrs = (ctypes.c_void_p * len(bufs))()
        self._fptrs = (ctypes.c_void_p * 1)()  # the fast path's output pointer
        # one image: the call's arguments as ready ctypes objects for a copy of the entry
        # point without argtypes (converting ten arguments costs about 1.3 us a call)
        self._run1 = self.lib["potlut_net_run"]
        self._run1.restype = ctypes.c_int64
        self._args1: tuple | None = None
        self._flat_out = len(self._out_shape) == 1

    def kernels(self, one_image: bool = False) -> list[str]:
        """The kernel each layer runs with (``KERNEL_NAMES``), as the C side picks them;
        ``one_image``: in a call on one image (small maps: output channels across lanes)."""
        out = np.zeros(max(1, len(self.plan.layer_names)), np.int64)
        fn = self.lib.potlut_net_kernels1 if one_image else self.lib.potlut_net_kernels
        n = fn(self.plan.words.ctypes.data, self._isa_id, out.ctypes.data)
        return [KERNEL_NAMES[int(k)] for k in out[:n]]

    def _arena_for(self, n: int) -> np.ndarray:
        need = n * self.stride + 64
        if self._arena.size < need:
            self._arena = np.zeros(need, np.uint8)
            self._base = (self._arena.ctypes.data + 63) // 64 * 64
            self._args1 = None  # it held the old arena's address
        return self._arena

    def _grow(self, n: int) -> None:
        """Call buffers for batches of up to ``n`` images (and the arena for them)."""
        self._cap = n
        self._xin = np.empty((n, *self._in_shape), np.float32)
        self._xaddr = self._xin.ctypes.data
        if len(self._out_specs) == 1:
            elems, dt = self._out_specs[0]
            self._out = np.empty((n, elems), dt)
            self._fptrs[0] = self._out.ctypes.data
        self._arena_for(min(self.threads, n))
        self._args1 = None

    def _one_image_args(self) -> tuple:
        """The one-image call's arguments for the current buffers and arena."""
        if self._args1 is None:
            i64, vp = ctypes.c_int64, ctypes.c_void_p
            self._args1 = (vp(self._words), vp(self._xaddr), i64(1), self._fptrs,
                           vp(self._base), i64(self.stride), i64(0), i64(self._isa_id),
                           i64(1), None)
        return self._args1

    def _fast(self, x: np.ndarray) -> np.ndarray:
        """:meth:`run` for one output, no keep, no profile: buffers and addresses reused."""
        N = x.shape[0]
        if N > self._cap:
            self._grow(N)
        if N == 1 and self._cap == 1:  # one image: no slicing, ready arguments
            np.copyto(self._xin, x, casting="unsafe")
            rc = self._run1(*self._one_image_args())
            if rc != 0:
                self._refused(rc)
            return self._out.copy() if self._flat_out else \
                self._out.reshape(1, *self._out_shape).copy()
        self._xin[:N] = x
        threads = min(self.threads, N)
        rc = self._run(self._words, self._xaddr, N, self._fptrs, self._base, self.stride, 0,
                       self._isa_id, threads, None)
        if rc != 0:
            self._refused(rc)
        return self._out[:N].reshape(N, *self._out_shape).copy()

    @staticmethod
    def _refused(rc: int) -> None:
        from potlut.errors import PotlutDataError

        if rc == -2:
            raise PotlutDataError("input contains NaN or infinite values")
        raise RuntimeError("C runner refused the plan")  # pragma: no cover - checked above

    def run(self, x: np.ndarray, keep: bool = False,
            prof: np.ndarray | None = None) -> np.ndarray | dict[str, np.ndarray]:
        """int32 logits of float32 images ``x`` (``[N, *in_shape]``, C-contiguous).

        ``prof`` (int64, one per op of the plan): adds each op's thread CPU ns (one thread).
        A NaN or infinite input raises :class:`~potlut.errors.PotlutDataError`.
        """
        if not keep and prof is None and len(self._out_specs) == 1 and x.shape[0] > 0:
            return self._fast(x)
        if keep and self._keeper is not self:
            if self._keeper is None:
                self._keeper = NativeNet(*self._twin_args, compact=False)
                self._keeper.threads = self.threads
            return self._keeper.run(x, keep=True, prof=prof)
        N = int(x.shape[0])
        plan = self.plan
        outs = [np.empty((N, e), d) for e, d in self._out_specs]
        self._ptrs[:] = [o.ctypes.data for o in outs]
        threads = min(self.threads, max(N, 1))
        groups = -(-N // plan.group)
        arena = self._arena_for(groups if keep else threads)
        base = self._base
        rc = self._run(self._words, x.ctypes.data, N, self._ptrs, base, self.stride,
                       int(keep), self._isa_id, threads,
                       None if prof is None else prof.ctypes.data)
        if rc != 0:
            self._refused(rc)
        if keep:
            return self._env(arena, base - arena.ctypes.data, N)
        if len(outs) == 1:
            return outs[0].reshape(N, *self._out_shape)
        return np.concatenate(outs, axis=1)

    def _env(self, arena: np.ndarray, off: int, N: int) -> dict[str, np.ndarray]:
        plan, env = self.plan, {}
        G, img = plan.group, plan.image_bytes
        for name, b in plan.index.items():
            buf = plan.bufs[b]
            shape = plan.shapes.get(name, buf.shape)
            out = np.empty((N, buf.elems), buf.np_dtype)
            for n in range(N):
                o = off + (n // G) * self.stride + (n % G) * img + buf.offset
                out[n] = arena[o:o + buf.nbytes].view(buf.np_dtype)
            env[name] = out.reshape(N, *shape)
        return env


def build_harness(out: Path, cc: str = "aarch64-linux-gnu-gcc") -> Path | None:
    """The stand-alone runner (plan, inputs and outputs as files), statically linked by ``cc``.

    Used to check the NEON kernels under ``qemu-aarch64``; None when ``cc`` is missing.
    """
    if shutil.which(cc) is None:
        return None
    subprocess.run([cc, "-O2", "-std=c11", "-static", "-pthread", str(SOURCE), str(HARNESS),
                    "-o", str(out)], check=True, capture_output=True, timeout=300)
    return out
