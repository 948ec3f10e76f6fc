"""Verilog KxK convolution window unit built from either product unit (P-LUT or SHIFT).

Each cycle it takes one input channel's KxK window of activations and the matching KxK
weights (signed codes, packed tap 0 in the low bits), forms the K*K products in parallel,
sums them with an adder tree and adds the sum to the accumulator; ``clr`` starts a new
output, ``last`` marks its final channel. Inputs are registered, so the unit is the same
synchronous block for both kinds and Fmax compares like with like.
"""

from __future__ import annotations

from potlut.deploy.rtl_pe import KINDS, PeSpec, RtlError, mul_name, mul_verilog

SIZES = (3, 5, 7)


def window_name(spec: PeSpec, kind: str, k: int) -> str:
    return f"{kind}_win{k}_{spec.tag()}_n{spec.n_products}"


def adder_name(width: int) -> str:
    return f"add_s{width}"


def adder_verilog(width: int) -> str:
    """A signed ``width``-bit two-input adder kept as its own block (``keep_hierarchy``):
    yosys would otherwise merge a whole adder tree into one ``$macc`` and map it as a
    LUT compressor tree, several times larger than carry-chain adders on either kind."""
    return (f"(* keep_hierarchy *)\nmodule {adder_name(width)} (input wire signed [{width - 1}:0]"
            f" x, y, output wire signed [{width}:0] s);\n  assign s = x + y;\nendmodule\n")


def _tree(terms: list[str], width: int, lines: list[str], prefix: str,
          widths: set[int]) -> tuple[str, int]:
    """Balanced adder tree over ``terms`` (signed, ``width`` bits); (root name, its width).

    Each level is one bit wider than the one below, so no adder is wider than it must be;
    ``widths`` collects the adder widths used.
    """
    level = 0
    tw = [width] * len(terms)
    while len(terms) > 1:
        nxt, nw = [], []
        for i in range(0, len(terms) - 1, 2):
            name = f"{prefix}{level}_{i // 2}"
            w = max(tw[i], tw[i + 1])
            ops = [t if tw_ == w else f"{{{{{w - tw_}{{{t}[{tw_ - 1}]}}}}, {t}}}"
                   for t, tw_ in ((terms[i], tw[i]), (terms[i + 1], tw[i + 1]))]
            lines.append(f"  wire signed [{w}:0] {name};")
            lines.append(f"  {adder_name(w)} a{name} (.x({ops[0]}), .y({ops[1]}), .s({name}));")
            widths.add(w)
            nxt.append(name)
            nw.append(w + 1)
        if len(terms) % 2:
            nxt.append(terms[-1])
            nw.append(tw[-1])
        terms, tw, level = nxt, nw, level + 1
    return terms[0], tw[0]


def window_verilog(spec: PeSpec, kind: str, k: int) -> str:
    """Module ``window_name(spec, kind, k)`` (and its product unit)."""
    if kind not in KINDS:
        raise RtlError(f"unknown PE kind {kind!r}; use one of {', '.join(KINDS)}")
    if k < 1:
        raise RtlError(f"window size must be >= 1, got {k}")
    b, pb, ab = spec.bits, spec.prod_bits, spec.acc_bits
    taps = k * k
    vw = taps * b
    lines = [
        f"module {window_name(spec, kind, k)} (",
        "  input  wire clk, rst, en, clr, last,",
        f"  input  wire [{vw - 1}:0] w,",
        f"  input  wire [{vw - 1}:0] a,",
        f"  output reg  signed [{ab - 1}:0] acc,",
        "  output reg  valid",
        ");",
        f"  reg [{vw - 1}:0] w_r, a_r;",
        "  reg en_r, clr_r, last_r;",
    ]
    prods = []
    for t in range(taps):
        lines.append(f"  wire signed [{pb - 1}:0] p{t};")
        lines.append(f"  wire n{t};")
        lines.append(f"  {mul_name(spec, kind)} m{t} (.w(w_r[{t * b + b - 1}:{t * b}]), "
                     f".a(a_r[{t * b + b - 1}:{t * b}]), .p(p{t}), .n(n{t}));")
        prods.append(f"p{t}")
    widths: set[int] = set()
    root, _ = _tree(prods, pb, lines, "s", widths)
    nw = taps.bit_length() + 1
    negs = " + ".join(f"{{{nw - 1}'d0, n{t}}}" for t in range(taps))
    lines += [
        f"  wire [{nw - 1}:0] nsum = {negs};  // the +1 of every negative product",
        f"  wire signed [{ab - 1}:0] sum = {root} + $signed(nsum);",
        "  always @(posedge clk) begin",
        "    if (rst) begin",
        "      en_r <= 1'b0; clr_r <= 1'b0; last_r <= 1'b0; valid <= 1'b0; acc <= 0;",
        f"      w_r <= {vw}'d0; a_r <= {vw}'d0;",
        "    end else begin",
        "      en_r <= en; clr_r <= clr; last_r <= en & last; w_r <= w; a_r <= a;",
        "      valid <= last_r;",
        "      if (en_r) acc <= clr_r ? sum : acc + sum;",
        "    end",
        "  end",
        "endmodule",
        "",
    ]
    adders = "".join(adder_verilog(w) for w in sorted(widths))
    return mul_verilog(spec, kind) + adders + "\n".join(lines)
