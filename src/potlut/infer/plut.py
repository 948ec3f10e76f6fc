"""P-LUT: the product table of one layer (METHODS §4), built from the file's codebooks only.

A code's real magnitude is ``codebook[c] = value[c] * 2^unit_exp`` with an integer
``value`` (IOS-PoT: 0 or ``2^(c-1)``; 8-bit fixed point: ``c``). The product of a weight
code ``i`` and an activation code ``j`` is then the integer ``value_w[i] * value_a[j]`` in
units of ``2^(unit_w + unit_a)``; the table stores it once, offline, so inference reads
products instead of computing them. When the two value lists are the same set (IOS-PoT
weights and signed IOS-PoT activations of one bit-width), the table is symmetric and only
its upper triangle is stored: ``n(n+1)/2`` entries, read as ``T[min(i,j)][max(i,j)]``.

Codebooks of other schemes (APoT sums of powers of two, PACT/DoReFa uniform levels,
LQ-Net's real basis) are made integers by :func:`fixed_codebook`: the table then holds
integer products of the two codebooks, and their real steps go into the layer's
requantization multiplier; only IOS-PoT tables hold powers of two alone.

``shift`` > 0 only where full products could overflow the int32 accumulator (5-bit and
wider layers): every entry is then ``round_half_up(value_w * value_a / 2^shift)``, the
smallest shift for which the layer's worst-case accumulator provably fits in int32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from potlut import schemes
from potlut.errors import PotlutError

INT32_MAX = 2**31 - 1
MAX_VALUE_BITS = 24  # IOS-PoT 5-bit codes need 15 bits, 8-bit fixed point 8


class UnsupportedModelError(PotlutError):
    """The file is valid but uses something the integer engine cannot run (scheme, op)."""


def integer_codebook(codebook: np.ndarray, where: str) -> tuple[np.ndarray, int]:
    """``(values, unit_exp)`` with ``codebook == values * 2^unit_exp`` exactly, values int64.

    The unit is the smallest non-zero magnitude's largest power-of-two divisor; a codebook
    that is not a set of integers times one power of two cannot run on integers.
    """
    cb = np.asarray(codebook, dtype=np.float64)
    if cb.ndim != 1 or cb.size == 0 or not np.all(np.isfinite(cb)) or np.any(cb < 0):
        raise UnsupportedModelError(f"{where}: codebook is not a list of magnitudes >= 0")
    nz = cb[cb > 0]
    if nz.size == 0:
        return np.zeros(cb.size, dtype=np.int64), 0
    # unit = 2^e with e the minimum over entries of (exponent of the lowest set mantissa bit)
    exps = []
    for v in nz:
        m, e = np.frexp(v)  # v = m * 2^e, 0.5 <= m < 1; m has at most 53 bits
        mant = int(m * 2.0**53)
        low = (mant & -mant).bit_length() - 1
        exps.append(int(e) - 53 + low)
    unit = min(exps)
    vals = [int(v * 2.0**-unit) if v > 0 else 0 for v in cb]
    if max(vals).bit_length() > MAX_VALUE_BITS:
        raise UnsupportedModelError(
            f"{where}: codebook is not small integers times a power of two (needs "
            f"{max(vals).bit_length()} bits; the integer engine takes up to {MAX_VALUE_BITS})")
    out = np.array(vals, dtype=np.int64)
    if not np.array_equal(out.astype(np.float64) * 2.0**unit, cb):
        raise UnsupportedModelError(f"{where}: codebook is not integers times a power of two")
    return out, unit


def _check_pot_span(codebook: np.ndarray, where: str) -> None:
    """Refuse, saying why, a power-of-two codebook whose levels span more than 2^24.

    b-bit IOS-PoT has ``2^(b-1)`` magnitudes ``2^-j``: at 6 bits down to ``2^-30``, at 8 bits
    ``2^-126``. Products of two such levels span ``2^60`` to ``2^252``: no int32 (or int64)
    accumulator holds their exact sum, and levels below ``2^-22`` of the largest fall under
    the fixed-point step ``2^-F`` of the stream that decides activation codes; float32 itself
    flushes products below ``2^-149`` to zero. Running them would mean rounding products and
    codes away, which is not the model's answer.
    """
    cb = np.asarray(codebook, dtype=np.float64)
    nz = cb[cb > 0]
    if nz.size and float(nz.max() / nz.min()) > 2.0**(MAX_VALUE_BITS - 1):
        span = int(round(math.log2(float(nz.max() / nz.min()))))
        raise UnsupportedModelError(
            f"{where}: power-of-two levels span 2^{span} (largest / smallest), more than the "
            f"2^{MAX_VALUE_BITS - 1} an exact integer product table and int32 accumulator "
            "can hold (IOS-PoT runs exactly up to 5 bits, DeepShift up to 4; above that the "
            "smallest levels fall below the 2^-F fixed point)")


RATIONAL_MAX_DEN = 1 << 12  # largest integer step count tried for a real-step codebook
APPROX_BITS = schemes.Scheme.approx_bits  # default fixed-point resolution (LQ-Net)

POT_VALUE_BITS = 15  # a real-scale codebook's power-of-two form is used below this width


@dataclass(frozen=True)
class FixedCodebook:
    """A codebook in integer form: ``codebook[c] ~= values[c] * mult * 2^unit_exp``.

    ``exact``: the values are the codebook's own integer structure (IOS-PoT, DeepShift,
    fixed point: ``mult == 1``; APoT, PACT/DoReFa, LSQ+ weights: integer multiples of one
    real step ``mult``) and ``max_err`` is only the float32 rounding of the stored levels.
    Not exact (LQ-Net's real basis): ``values`` are the levels rounded to the scheme's
    ``approx_bits``
    bits and ``max_err`` bounds what that rounding changed (same units as the codebook).
    """

    values: np.ndarray  # int64
    unit_exp: int
    mult: float
    exact: bool
    max_err: float


def fixed_codebook(codebook: np.ndarray, scheme: str, where: str) -> FixedCodebook:
    """Integer form of a (weight or activation) magnitude codebook of ``scheme``.

    What the scheme declares (:mod:`potlut.schemes`) decides. Tried in order: integers
    times a power of two (exact, a shift; always for ``pot_levels`` schemes, else only
    below 2^15); integers ``0..D`` (``D <= 4096``) times one real step, up to float32
    storage rounding (exact, the step folds into the requantization multiplier); for
    ``APPROXIMATE`` schemes, the levels rounded to 12-bit fixed point. ``REFUSED`` schemes
    and anything else raise :class:`UnsupportedModelError` saying why.
    """
    facts = schemes.lookup(scheme)
    pot = facts is not None and facts.pot_levels
    if facts is not None and facts.engine == schemes.REFUSED:
        raise UnsupportedModelError(f"{where}: scheme {scheme!r} cannot run integer-only: "
                                    f"{facts.engine_note}")
    shifted = None
    try:
        if pot:  # levels 2^-j: the integers are 2^(span), too wide above 5 bits (IOS-PoT)
            _check_pot_span(codebook, where)
        values, unit = integer_codebook(codebook, where)
        # any float32 list is integers times a power of two; for real-scale schemes that
        # form is only useful when small (else the one-real-step form below is the codebook)
        small = 2**8 if facts is not None and facts.engine == schemes.INT8 else 2**POT_VALUE_BITS
        if pot:
            return FixedCodebook(values, unit, 1.0, True, 0.0)
        if int(values.max(initial=0)) < small:  # int8 path: weights must fit 8 bits
            shifted = FixedCodebook(values, unit, 1.0, True, 0.0)
    except UnsupportedModelError:
        if pot:
            raise
    cb = np.asarray(codebook, dtype=np.float64)
    if cb.ndim != 1 or cb.size == 0 or not np.all(np.isfinite(cb)) or np.any(cb < 0):
        raise UnsupportedModelError(f"{where}: codebook is not a list of magnitudes >= 0")
    if not np.any(cb > 0):
        return FixedCodebook(np.zeros(cb.size, np.int64), 0, 1.0, True, 0.0)
    top = float(cb.max())
    ratio = cb / top
    for den in range(1, RATIONAL_MAX_DEN + 1):
        v = np.round(ratio * den)
        if np.all(np.abs(ratio * den - v) <= 2.5e-7 * den + 1e-12):
            if shifted is not None and int(shifted.values.max(initial=0)) <= den:
                break  # the shift form is no wider: no multiplier needed
            # a real step of STEP_BITS bits (potlut.quant.real_step: APoT, PACT) is also
            # integers times a power of two, but k times wider than the k-step form
            err = float(np.abs(v * (top / den) - cb).max())
            return FixedCodebook(v.astype(np.int64), 0, top / den, True, err)
    if shifted is not None:
        return shifted
    if facts is None or facts.engine != schemes.APPROXIMATE:
        raise UnsupportedModelError(
            f"{where}: codebook of scheme {scheme!r} is not integers times one scale; the "
            "integer engine cannot run it")
    den = (1 << facts.approx_bits) - 1
    v = np.round(ratio * den)
    err = float(np.abs(v * (top / den) - cb).max())
    return FixedCodebook(v.astype(np.int64), 0, top / den, False, err)


def round_shift(x: np.ndarray | int, shift: int) -> np.ndarray:
    """``round_half_up(x / 2^shift)`` for non-negative integers (identity when shift = 0)."""
    x = np.asarray(x, dtype=np.int64)
    return x if shift == 0 else (x + (1 << (shift - 1))) >> shift


def _half_index(n: int) -> np.ndarray:
    """``idx[i, j]``: position of ``T[min(i,j)][max(i,j)]`` in the row-major upper triangle."""
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    return lo * n - lo * (lo - 1) // 2 + (hi - lo)


def _entry_dtype(max_abs: int) -> np.dtype:
    for dt in (np.int8, np.int16, np.int32, np.int64):
        if max_abs <= np.iinfo(dt).max:
            return np.dtype(dt)
    raise UnsupportedModelError("P-LUT entry does not fit in 64 bits")  # unreachable


@dataclass(frozen=True)
class PLut:
    """Products of one layer's weight codes (rows) and activation codes (columns).

    ``entries`` is what is stored: the upper triangle (``n(n+1)/2`` entries) when
    ``symmetric``, else the full ``nw x na`` table, row-major, in the smallest integer
    type that holds them.
    """

    w_values: np.ndarray  # int64 [nw]
    a_values: np.ndarray  # int64 [na]
    shift: int
    symmetric: bool
    entries: np.ndarray

    @property
    def nw(self) -> int:
        return int(self.w_values.size)

    @property
    def na(self) -> int:
        return int(self.a_values.size)

    @property
    def nbytes(self) -> int:
        """Bytes of the stored table (half or full)."""
        return int(self.entries.nbytes)

    def table(self) -> np.ndarray:
        """The full ``nw x na`` table (int64), read from the stored entries."""
        if self.symmetric:
            return self.entries.astype(np.int64)[_half_index(self.nw)]
        return self.entries.astype(np.int64).reshape(self.nw, self.na)

    def signed_rows(self, a_signed: bool) -> np.ndarray:
        """Table indexed by signed codes: ``rows[sw, sa]`` (int32), the sign by XOR.

        A signed code is ``negative << k | code`` with ``k = log2(n)`` bits of magnitude
        code; ``rows[sw, sa] = (-1)^(sign(sw) XOR sign(sa)) * T[code(sw)][code(sa)]``.
        Unsigned activations have no sign bit (``sa = code``). This is the runtime view of
        the same table that the kernels index with one read per product.
        """
        t = self.table()
        kw = _code_bits(self.nw)
        sw = np.arange(2 * (1 << kw))
        cw, negw = sw & ((1 << kw) - 1), sw >> kw
        if a_signed:
            ka = _code_bits(self.na)
            sa = np.arange(2 * (1 << ka))
            ca, nega = sa & ((1 << ka) - 1), sa >> ka
        else:
            sa = np.arange(1 << _code_bits(self.na))
            ca, nega = sa, np.zeros_like(sa)
        valid = (cw[:, None] < self.nw) & (ca[None, :] < self.na)
        mag = np.where(valid, t[np.minimum(cw, self.nw - 1)][:, np.minimum(ca, self.na - 1)], 0)
        sign = np.where((negw[:, None] ^ nega[None, :]) & 1, -1, 1)
        out = sign * mag
        if np.abs(out).max(initial=0) > INT32_MAX:
            raise UnsupportedModelError("P-LUT entries exceed int32")
        return out.astype(np.int32)


def _code_bits(n: int) -> int:
    """Bits of a magnitude code field for ``n`` codes (the sign bit sits above them)."""
    return max(1, (n - 1).bit_length())


def accumulator_shift(w_values: np.ndarray, a_max: int, w_codes: np.ndarray) -> int:
    """Smallest table shift for which no output channel's accumulator can exceed int32.

    ``w_codes`` is ``[O, K]``; the bound of channel ``o`` is
    ``sum_k round_shift(value_w[code[o,k]] * a_max)`` (every activation at its largest
    magnitude and signs aligned), which is exact for the worst input.
    """
    if int(w_values.max(initial=0)) >= 2**15 or a_max >= 2**16:
        raise UnsupportedModelError("code values wider than 16 bits (IOS-PoT above 5 bits) "
                                    "are not supported by the integer engine")
    prods = w_values.astype(np.int64)[w_codes.astype(np.int64)] * np.int64(a_max)  # [O, K]
    for shift in range(0, 32):
        if int(round_shift(prods, shift).sum(axis=1).max(initial=0)) <= INT32_MAX:
            return shift
    raise UnsupportedModelError("no table shift keeps the accumulator in int32")


def build_plut(
    w_values: np.ndarray, a_values: np.ndarray, w_codes: np.ndarray | None = None
) -> PLut:
    """The P-LUT of one layer: products of integer code values, half-stored when symmetric.

    ``w_codes`` (``[O, K]``, optional) lets the table shift be the smallest that keeps
    every accumulator of this layer in int32; without it the shift is 0.
    """
    w_values = np.asarray(w_values, dtype=np.int64)
    a_values = np.asarray(a_values, dtype=np.int64)
    a_max = int(a_values.max(initial=0))
    shift = 0 if w_codes is None else accumulator_shift(w_values, a_max, w_codes)
    full = round_shift(np.multiply.outer(w_values, a_values), shift)
    symmetric = w_values.size == a_values.size and np.array_equal(w_values, a_values)
    if symmetric:
        n = w_values.size
        iu = np.triu_indices(n)
        stored = full[iu]
        assert np.array_equal(stored[_half_index(n)], full)
    else:
        stored = full.reshape(-1)
    dt = _entry_dtype(int(np.abs(stored).max(initial=0)))
    return PLut(w_values, a_values, shift, bool(symmetric), stored.astype(dt))
