"""Kernel backends of the integer engine.

Whole network in one native call (:mod:`potlut.infer.kernels.native`): ``avx512``,
``avx2``, ``scalar``, ``neon`` (aarch64), and ``c`` = the best of them this CPU runs.
Layer by layer from Python: ``numba`` (gather loop) and ``c-layers`` (the earlier per-layer
C kernels, kept as a comparison point). ``auto`` = ``c`` where a C compiler (or a built
library) is there, else ``numba``. All compute exactly the reference's integers.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from potlut.errors import PotlutConfigError

BACKENDS = ("auto", "c", "avx512", "avx2", "scalar", "neon", "numba", "c-layers")
NATIVE = ("c", "avx512", "avx2", "scalar", "neon")


class Backend(Protocol):
    name: str

    def prepare(self, plan: Any) -> Any: ...

    def run_layer(self, plan: Any, x: np.ndarray, res: np.ndarray | None,
                  n: int) -> tuple[np.ndarray | None, np.ndarray | None]: ...

    def quantize(self, y: np.ndarray, act: Any) -> np.ndarray: ...


_cache: dict[str, Backend] = {}


def get_backend(name: str = "auto") -> Backend:
    """The named layer-by-layer backend (cached); ``auto`` = C if it can be built, else numba."""
    if name not in BACKENDS:
        raise PotlutConfigError(f"unknown backend {name!r}; choose one of: {', '.join(BACKENDS)}")
    if name in _cache:
        return _cache[name]
    if name == "auto":
        from potlut.infer.kernels.cbackend import c_available

        be = get_backend("c-layers" if c_available() else "numba")
    elif name == "c-layers":
        from potlut.infer.kernels.cbackend import CBackend

        be = CBackend()
    elif name == "numba":
        from potlut.infer.kernels.numba_backend import NumbaBackend

        be = NumbaBackend()
    else:
        raise PotlutConfigError(f"backend {name!r} runs the whole network natively: use "
                                "potlut.infer.kernels.native.NativeNet")
    _cache[name] = be
    return be


def resolve(name: str) -> str:
    """The concrete backend ``name`` stands for: ``auto`` -> ``c`` (native) or ``numba``."""
    if name not in BACKENDS:
        raise PotlutConfigError(f"unknown backend {name!r}; choose one of: {', '.join(BACKENDS)}")
    if name != "auto":
        return name
    from potlut.infer.kernels.native import supported_isas

    return "c" if supported_isas() else "numba"
