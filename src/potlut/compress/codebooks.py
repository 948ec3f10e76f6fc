"""Codebooks that follow from a quantizer's scheme, code count and exponent.

An IOS-PoT or fixed-point codebook is a formula of ``(scheme, n_codes, exponent)``
(docs/format.md §1), so a file stores it as ``derived`` (no bytes) instead of float32
values; the writer does so only where the formula gives the array bit for bit.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from potlut import schemes

MAX_EXPONENT = 1000  # |exponent| of a derivable codebook (float32 needs far less)


def derived_codebook(attrs: Any) -> np.ndarray | None:
    """The float32 codebook ``attrs`` (a layer's ``weight`` or ``act``) implies, or None.

    IOS-PoT: ``cb[0] = 0``, ``cb[c] = 2^(e - (n-1-c))``; fixed point: ``cb[c] = c * 2^e / n``
    (``n = n_codes``, a power of two). Other schemes, a null exponent, or a result that is
    not finite and non-zero where it should be give None.
    """
    if not isinstance(attrs, dict):
        return None
    facts = schemes.lookup(attrs.get("scheme")) if isinstance(attrs.get("scheme"), str) else None
    n, e = attrs.get("n_codes"), attrs.get("exponent")
    if (facts is None or type(n) is not int or type(e) is not int or not 1 <= n <= 65536
            or abs(e) > MAX_EXPONENT):
        return None
    c = np.arange(n, dtype=np.float64)
    if facts.name == "iospot":
        cb = np.ldexp(1.0, e - (n - 1) + np.arange(n))
        cb[0] = 0.0
    elif facts.name == "fixedpoint" and n & (n - 1) == 0:
        cb = np.ldexp(c, e - (n.bit_length() - 1))
    else:
        return None
    with np.errstate(over="ignore"):
        out = cb.astype(np.float32)
    if not np.isfinite(out).all() or (n > 1 and out[1] == 0):
        return None
    return out
