"""Verilog processing elements: the P-LUT product unit and its bit-shift PoT baseline.

Both take the same inputs — a weight and an activation as signed codes ``neg << k | code``
(``b = k + 1`` bits, the engine's buffer format) — and produce the same signed product,
bit for bit equal to the engine's table entry ``(-1)^(sw^sa) * T[cw][ca]`` (METHODS §4):

- **P-LUT**: the layer's product table as a ROM, half-stored when symmetric (``n(n+1)/2``
  entries read at ``T[min(cw, ca)][max(cw, ca)]``), then the sign by XOR.
- **SHIFT** (the conventional PoT scheme the paper compares with): the activation code is
  decoded to its integer ``2^(ca-1)``, shifted left by the weight's exponent ``cw - 1``,
  rounded right by the table shift (round half up, as the P-LUT entries), then signed.

A PE registers its inputs and adds the product into an accumulator whose width follows
from the worst case of ``n_products`` products (the same rule for both kinds).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from potlut.errors import PotlutError
from potlut.infer.plut import PLut, _code_bits, build_plut

KINDS = ("plut", "shift")


class RtlError(PotlutError):
    """A layer or option the Verilog generator cannot express (told in one line)."""


@dataclass(frozen=True)
class PeSpec:
    """Numbers a PE is generated from: one layer's table and its accumulation length."""

    plut: PLut
    n_products: int  # products summed into one accumulator (worst case sizes it)

    @property
    def kbits(self) -> int:
        return _code_bits(self.plut.nw)

    @property
    def bits(self) -> int:
        """Width of a signed code (sign bit + magnitude code)."""
        return self.kbits + 1

    @property
    def max_entry(self) -> int:
        return int(np.abs(self.plut.entries.astype(np.int64)).max(initial=0))

    @property
    def mag_bits(self) -> int:
        return max(1, self.max_entry.bit_length())

    @property
    def prod_bits(self) -> int:
        """Signed product width."""
        return self.mag_bits + 1

    @property
    def acc_bits(self) -> int:
        """Signed accumulator width: holds ``±n_products * max_entry`` exactly."""
        return (self.n_products * max(1, self.max_entry)).bit_length() + 1

    def tag(self) -> str:
        return f"b{self.bits}_s{self.plut.shift}"


def iospot_values(bits: int) -> np.ndarray:
    """Integer magnitudes of the ``2^(bits-1)`` IOS-PoT codes: 0, 1, 2, 4, ... (METHODS §1.3)."""
    n = 1 << (bits - 1)
    return np.array([0] + [1 << (c - 1) for c in range(1, n)], dtype=np.int64)


def iospot_spec(bits: int, n_products: int) -> PeSpec:
    """The spec of a ``bits``-bit IOS-PoT layer with ``n_products`` products per output.

    The table shift is the engine's rule for the worst weights (every code at its largest),
    so 5-bit units round their entries exactly as a 5-bit layer of that size would.
    """
    v = iospot_values(bits)
    worst = np.full((1, n_products), v.size - 1, dtype=np.int64)
    return PeSpec(build_plut(v, v, worst), n_products)


def layer_spec(layer, n_products: int | None = None) -> PeSpec:
    """The spec of a P-LUT layer of the integer program (``layer.k`` products per output)."""
    if layer.plut is None or layer.act.fmt != "sm" or not layer.plut.symmetric:
        raise RtlError(f"layer {layer.module}: not a symmetric P-LUT layer (mode {layer.mode});"
                       " the hardware unit runs IOS-PoT layers with signed activations")
    return PeSpec(layer.plut, n_products or layer.k)


def _check_shift_kind(spec: PeSpec) -> None:
    p = spec.plut
    if not (p.symmetric and np.array_equal(p.w_values, iospot_values(spec.bits))):
        raise RtlError("the bit-shift PE needs IOS-PoT codebooks (values 0, 1, 2, 4, ...) on "
                       "both operands")


def mul_name(spec: PeSpec, kind: str) -> str:
    return f"{kind}_mul_{spec.tag()}"


def mul_verilog(spec: PeSpec, kind: str) -> str:
    """Combinational product unit: ``p + n`` is the signed product of ``w`` and ``a``.

    ``p`` (``prod_bits`` wide) is the magnitude, bitwise inverted when negative, and ``n``
    the sign: the two's complement ``-mag = ~mag + 1`` leaves its ``+1`` to the adder that
    sums the products (a carry-in), so no PE spends a carry chain on negation.
    """
    if kind not in KINDS:
        raise RtlError(f"unknown PE kind {kind!r}; use one of {', '.join(KINDS)}")
    k, b, m, pb = spec.kbits, spec.bits, spec.mag_bits, spec.prod_bits
    head = [
        f"module {mul_name(spec, kind)} (",
        f"  input  wire [{b - 1}:0] w,",
        f"  input  wire [{b - 1}:0] a,",
        f"  output wire signed [{pb - 1}:0] p,",
        "  output wire n",
        ");",
        f"  wire [{k - 1}:0] cw = w[{k - 1}:0];",
        f"  wire [{k - 1}:0] ca = a[{k - 1}:0];",
        f"  wire neg = w[{k}] ^ a[{k}];",
        f"  reg  [{m - 1}:0] mag;",
    ]
    body = _plut_body(spec) if kind == "plut" else _shift_body(spec)
    tail = [
        "  // sign by XOR: p = neg ? ~mag : mag (one's complement); the sum adds neg back",
        f"  assign p = $signed({{neg, mag ^ {{{m}{{neg}}}}}});",
        "  assign n = neg;",
        "endmodule",
        "",
    ]
    return "\n".join(head + body + tail)


def _plut_body(spec: PeSpec) -> list[str]:
    """The table as a ROM ``T[lo][hi]`` over the stored upper triangle (``n(n+1)/2`` entries,
    ``lo = min(cw, ca)``, ``hi = max(cw, ca)``)."""
    p, k, m = spec.plut, spec.kbits, spec.mag_bits
    ent = [int(e) for e in np.abs(p.entries.astype(np.int64))]
    n = p.nw
    pairs = [(i, j) for i in range(n) for j in range(i, n)]  # row-major upper triangle
    out = [
        f"  wire [{k - 1}:0] lo = (cw < ca) ? cw : ca;",
        f"  wire [{k - 1}:0] hi = (cw < ca) ? ca : cw;",
        "  always @* begin",
        "    case ({lo, hi})  // half-stored: only lo <= hi is a table entry",
    ]
    out += [f"      {{{k}'d{i}, {k}'d{j}}}: mag = {m}'d{e};"
            for (i, j), e in zip(pairs, ent, strict=True)]
    out += [f"      default: mag = {m}'d0;", "    endcase", "  end"]
    return out


def _shift_body(spec: PeSpec) -> list[str]:
    _check_shift_kind(spec)
    k, m, s = spec.kbits, spec.mag_bits, spec.plut.shift
    n = spec.plut.nw
    fw = 2 * (n - 2) + 1 + 1  # full product 2^(cw-1+ca-1) before the table shift, + carry
    out = [
        f"  wire [{fw - 1}:0] one = {fw}'d1;",
        "  // conventional PoT: decode the activation to its integer, shift by the weight exponent",
        f"  wire [{fw - 1}:0] aval = (ca == {k}'d0) ? {fw}'d0 : (one << (ca - {k}'d1));",
        f"  wire [{fw - 1}:0] full = (cw == {k}'d0) ? {fw}'d0 : (aval << (cw - {k}'d1));",
    ]
    if s == 0:
        out += [f"  always @* mag = full[{m - 1}:0];"]
    else:  # round half up by the table shift, exactly as the engine's entries
        out += [f"  wire [{fw - 1}:0] rnd = (full + {fw}'d{1 << (s - 1)}) >> {s};",
                f"  always @* mag = rnd[{m - 1}:0];"]
    return out


def pe_name(spec: PeSpec, kind: str) -> str:
    return f"{kind}_pe_{spec.tag()}_n{spec.n_products}"


def pe_verilog(spec: PeSpec, kind: str) -> str:
    """One PE: registered inputs, one product, an accumulator (``clr`` restarts it).

    ``en``/``clr``/``last`` travel with the operands; ``valid`` rises when the product of a
    ``last`` operand pair has been added, i.e. ``acc`` is a finished sum.
    """
    b, pb, ab = spec.bits, spec.prod_bits, spec.acc_bits
    name = pe_name(spec, kind)
    return mul_verilog(spec, kind) + "\n".join([
        f"module {name} (",
        "  input  wire clk, rst, en, clr, last,",
        f"  input  wire [{b - 1}:0] w,",
        f"  input  wire [{b - 1}:0] a,",
        f"  output reg  signed [{ab - 1}:0] acc,",
        "  output reg  valid",
        ");",
        f"  reg [{b - 1}:0] w_r, a_r;",
        "  reg en_r, clr_r, last_r;",
        f"  wire signed [{pb - 1}:0] p;",
        "  wire n;",
        f"  {mul_name(spec, kind)} mul (.w(w_r), .a(a_r), .p(p), .n(n));",
        f"  wire signed [{ab - 1}:0] base = clr_r ? {ab}'sd0 : acc;",
        "  always @(posedge clk) begin",
        "    if (rst) begin",
        "      en_r <= 1'b0; clr_r <= 1'b0; last_r <= 1'b0; valid <= 1'b0; acc <= 0;",
        f"      w_r <= {b}'d0; a_r <= {b}'d0;",
        "    end else begin",
        "      en_r <= en; clr_r <= clr; last_r <= en & last; w_r <= w; a_r <= a;",
        "      valid <= last_r;",
        "      if (en_r) acc <= base + p + $signed({1'b0, n});",
        "    end",
        "  end",
        "endmodule",
        "",
    ])
