"""Kernel backends of the integer engine: ``c`` (AVX2 byte shuffles) and ``numba`` (gather).

``get_backend("auto")`` picks C when a compiler (or an already built library) is there
and falls back to numba otherwise; both compute exactly the reference's integers.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from potlut.errors import PotlutConfigError

BACKENDS = ("auto", "c", "numba")


class Backend(Protocol):
    name: str

    def prepare(self, plan: Any) -> Any: ...

    def run_layer(self, plan: Any, x: np.ndarray, res: np.ndarray | None,
                  n: int) -> tuple[np.ndarray | None, np.ndarray | None]: ...

    def quantize(self, y: np.ndarray, act: Any) -> np.ndarray: ...


_cache: dict[str, Backend] = {}


def get_backend(name: str = "auto") -> Backend:
    """The named backend (cached); ``auto`` = C if it can be built here, else numba."""
    if name not in BACKENDS:
        raise PotlutConfigError(f"unknown backend {name!r}; choose one of: {', '.join(BACKENDS)}")
    if name in _cache:
        return _cache[name]
    if name == "auto":
        from potlut.infer.kernels.cbackend import c_available

        be = get_backend("c" if c_available() else "numba")
    elif name == "c":
        from potlut.infer.kernels.cbackend import CBackend

        be = CBackend()
    else:
        from potlut.infer.kernels.numba_backend import NumbaBackend

        be = NumbaBackend()
    _cache[name] = be
    return be
