"""Print the integer program (:func:`potlut.infer.program.lower`) as C99: ``NAME.h`` and
``NAME.c`` for a microcontroller.

The C is a transcription of the same :class:`~potlut.infer.program.Program` the Python
engine runs (one lowering, so the two cannot drift apart): no malloc, no floating point,
nothing from libc beyond ``<stdint.h>`` and ``<string.h>``. Flash holds the weights
(packed at their bit-width, or S-Huff), the P-LUT rows (one copy per distinct table), the
per-channel requantization constants or accumulator thresholds and the input table; RAM
holds one static arena planned by buffer liveness (:mod:`potlut.infer.arena`).

Each conv/linear layer is one function. In a P-LUT layer every product is one table read
``T[(w << A) | a]`` (signed codes; the sign is folded into the row) and one add; its
output is projected onto the next codes by per-channel accumulator thresholds where it
feeds only the next layer (compares, no multiply), else requantized by the out-of-line
``potlut_requant`` (one multiply per output value). The 8-bit first/last layers multiply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from potlut.deploy.c_runtime import RUNTIME
from potlut.deploy.c_weights import packed_stream, shuff_stream
from potlut.infer.arena import ArenaPlan, plan_arena
from potlut.infer.plut import _code_bits
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
    UnsupportedModelError,
)

WEIGHT_FORMATS = ("packed", "shuff")


@dataclass
class Normalization:
    """How a raw pixel ``p`` (uint8) becomes the model's input: ``(p / scale - mean) / std``."""

    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def image(self, pixels: np.ndarray) -> np.ndarray:
        """Float32 model input of uint8 pixels ``[..., C, H, W]`` (float32 arithmetic)."""
        c = len(self.mean)
        x = np.asarray(pixels).astype(np.float32) / np.float32(self.scale)
        m = np.asarray(self.mean, np.float32).reshape(c, 1, 1)
        s = np.asarray(self.std, np.float32).reshape(c, 1, 1)
        return ((x - m) / s).astype(np.float32)


@dataclass
class CModel:
    """A generated model: the two files and the facts the report and the tests need."""

    name: str
    header: str
    source: str
    arena_bytes: int
    arena_lower_bound: int
    low_bit_functions: list[str]  # P-LUT layer functions (must hold no multiply)
    int8_functions: list[str]  # 8-bit layer functions (int8 x int8 MACs)
    in_size: int
    out_size: int
    weights: str
    weight_bytes: int  # flash bytes of the weight streams (+ decoder tables for shuff)
    table_bytes: int  # flash bytes of the P-LUT rows
    plan: ArenaPlan | None = field(default=None, repr=False)


def c_ident(s: str) -> str:
    """A C identifier from a buffer or module name."""
    s = re.sub(r"[^0-9A-Za-z_]", "_", s)
    return s if s and not s[0].isdigit() else "_" + s


def _ints(vals, per_line: int = 24) -> str:
    vals = [int(v) for v in np.asarray(vals).reshape(-1)]
    out = []
    for i in range(0, len(vals), per_line):
        out.append("    " + ",".join(_lit(v) for v in vals[i:i + per_line]) + ",")
    return "\n".join(out) if out else "    0,"


def _lit(v: int) -> str:
    if v == -(2**31):
        return "(-2147483647-1)"
    if abs(v) > 2**31 - 1:
        return f"INT64_C({v})"
    return str(v)


def _ctype_for(max_abs: int, signed: bool = True) -> str:
    for bits in (8, 16, 32):
        if (signed and max_abs < 2 ** (bits - 1)) or (not signed and max_abs < 2**bits):
            return f"{'' if signed else 'u'}int{bits}_t"
    return "int64_t" if signed else "uint64_t"


def code_ctype(act: ActQuant) -> str:
    """C element type of a codes buffer: sign-magnitude uint8, or the 8-bit value itself."""
    if act.fmt == "sm" or not act.signed:
        return "uint8_t"
    return "int8_t"


def check_program(prog: Program) -> None:
    """Refuse, with one line, a program the generator cannot print exactly."""
    if not prog.exact:
        layers = ", ".join(a["layer"] for a in prog.approximations())
        raise UnsupportedModelError(f"layers {layers} run with rounded codebooks (approximated "
                                    "scheme); export-c emits only exact programs")
    inq = [s for s in prog.steps if isinstance(s, InputQuant)]
    if len(inq) != 1:
        raise UnsupportedModelError("export-c needs exactly one layer reading the input image")
    if len(prog.outputs) != 1:
        raise UnsupportedModelError("export-c needs a single model output")
    for st in prog.steps:
        acts = []
        if isinstance(st, (InputQuant, Quantize)):
            acts.append(st.act)
        if isinstance(st, Layer):
            acts.append(st.act)
            if st.out_act is not None:
                acts.append(st.out_act)
            if st.mode == "int8" and int(np.abs(st.weight_ints()).max(initial=0)) > 127:
                raise UnsupportedModelError(f"layer {st.module}: weights wider than int8")
        for a in acts:
            if a.fmt == "int" and not np.array_equal(a.values, np.arange(a.n)):
                raise UnsupportedModelError(f"{a.scheme} input codes are not their integer "
                                            "values; export-c cannot print this layer")
            if a.fmt == "int" and a.n > (128 if a.signed else 256):
                raise UnsupportedModelError("fixed-point layer input wider than 8 bits")
        if isinstance(st, Cat) and st.dim != 1:
            raise UnsupportedModelError(f"cat along dim {st.dim} (export-c joins channels only)")


class _Printer:
    def __init__(self, prog: Program, name: str, weights: str, norm: Normalization) -> None:
        if weights not in WEIGHT_FORMATS:
            raise UnsupportedModelError(f"unknown weight format {weights!r}; choose packed or "
                                        "shuff")
        check_program(prog)
        self.prog, self.name, self.weights, self.norm = prog, c_ident(name), weights, norm
        self.data: list[str] = []  # const arrays (flash)
        self.funcs: list[str] = []
        self.calls: list[str] = []
        self.tables: dict[tuple[str, bytes], str] = {}
        self.low_bit: list[str] = []
        self.int8: list[str] = []
        self.weight_bytes = 0
        self.table_bytes = 0
        self.kmax = 1
        self.layer_bytes: dict[str, dict[str, int]] = {}
        self.acts: dict[str, ActQuant] = {}  # codes buffers and their quantizers
        for st in prog.steps:
            if isinstance(st, (InputQuant, Quantize)):
                self.acts[st.dst] = st.act
            elif isinstance(st, Layer) and st.out_codes is not None:
                self.acts[st.out_codes] = st.out_act
        self.input = next(s for s in prog.steps if isinstance(s, InputQuant))

    # -------------------------------------------------------------- helpers
    def const(self, ctype: str, cname: str, vals) -> str:
        self.data.append(f"static const {ctype} {cname}[] = {{\n{_ints(vals)}\n}};")
        return cname

    def nbytes(self, buf: str) -> int:
        n = int(np.prod(self.prog.shapes[buf])) if buf in self.prog.shapes else None
        if buf in self.acts:
            n = int(np.prod(self.acts_shape(buf)))
            return n
        return 4 * n

    def acts_shape(self, buf: str) -> tuple[int, ...]:
        for st in self.prog.steps:
            if isinstance(st, Layer) and st.src == buf:
                return st.in_shape if st.op == "conv2d" else (int(np.prod(st.in_shape)),)
        if buf in self.prog.shapes:
            return self.prog.shapes[buf]
        raise KeyError(buf)

    def ctype(self, buf: str) -> str:
        return code_ctype(self.acts[buf]) if buf in self.acts else "int32_t"

    def table(self, st: Layer) -> tuple[str, int]:
        rows = st.plut.signed_rows(st.act.signed)
        ct = _ctype_for(int(np.abs(rows).max(initial=0)))
        key = (ct, rows.tobytes())
        if key not in self.tables:
            cname = f"{self.name}_T{len(self.tables)}"
            self.const(ct, cname, rows)
            self.tables[key] = cname
            self.table_bytes += rows.size * int(ct[3 if ct[0] == "i" else 4:-2]) // 8
        return self.tables[key], int(rows.shape[1]).bit_length() - 1

    def quant_expr(self, y: str, act: ActQuant, thr: str) -> str:
        """C expression: the codes of int32 ``y`` by counting thresholds."""
        n = act.n - 1
        if act.signed:
            mag = f"(uint32_t)({y} < 0 ? -(int64_t){y} : (int64_t){y})"
        else:
            mag = f"(uint32_t)({y} > 0 ? {y} : 0)"
        cnt = f"potlut_count({thr}, {n}u, {mag})"
        if not act.signed:
            return f"({code_ctype(act)}){cnt}"
        if act.fmt == "sm":
            return (f"(uint8_t)(potlut_c = {cnt}, potlut_c | ({y} < 0 && potlut_c ? "
                    f"{1 << act.kbits}u : 0u))")
        return f"(int8_t)(potlut_c = {cnt}, {y} < 0 ? -(int32_t)potlut_c : (int32_t)potlut_c)"

    def thresholds(self, prefix: str, act: ActQuant) -> str:
        return self.const("uint32_t", f"{prefix}_thr",
                          np.minimum(act.thresholds, 2**32 - 1).astype(np.int64))

    def requant_consts(self, prefix: str, rq) -> tuple[str, str, str]:
        mt = "int32_t" if int(np.abs(rq.M).max(initial=0)) < 2**31 else "int64_t"
        return (self.const(mt, f"{prefix}_M", rq.M), self.const("int64_t", f"{prefix}_B", rq.B),
                self.const("uint8_t", f"{prefix}_r", rq.r))

    # -------------------------------------------------------------- layers
    def layer(self, i: int, st: Layer) -> None:
        fn = f"{self.name}_L{i}_{c_ident(st.module)}"
        (self.low_bit if st.mode == "plut" else self.int8).append(fn)
        C, H, W = st.in_shape
        n_out, G = st.out_channels, st.groups
        Cg, Og = C // G, n_out // G
        (KH, KW), (SH, SW), (PH, PW), (DH, DW) = st.kernel, st.stride, st.padding, st.dilation
        OH, OW = (st.out_shape[1], st.out_shape[2]) if len(st.out_shape) == 3 else (1, 1)
        K, HW = Cg * KH * KW, H * W
        self.kmax = max(self.kmax, K)
        kb = _code_bits(st.w_values.size)
        wb0 = self.weight_bytes
        # weights
        if self.weights == "packed":
            blob, width = packed_stream(st)
            w = self.const("uint8_t", f"{fn}_w", np.frombuffer(blob, np.uint8))
            self.weight_bytes += len(blob)
            rd_init = f"    potlut_bits wb = {{{w}, 0u, 0u}};\n"
            unpack = f"        potlut_row_packed(&wb, row, {K}, {width}u);\n"
        else:
            s = shuff_stream(st)
            wc = self.const("uint8_t", f"{fn}_wc", np.frombuffer(s.codes, np.uint8))
            ws = self.const("uint8_t", f"{fn}_ws", np.frombuffer(s.signs, np.uint8))
            cnt = self.const("uint16_t", f"{fn}_hc", s.count)
            sym = self.const("uint8_t", f"{fn}_hs", s.symbols)
            nz = self.const("uint8_t", f"{fn}_nz", (st.w_values != 0).astype(np.int64))
            self.weight_bytes += s.nbytes + st.w_values.size
            rd_init = (f"    potlut_bits wb = {{{wc}, 0u, 0u}};\n"
                       f"    potlut_bits sb = {{{ws}, 0u, 0u}};\n")
            unpack = (f"        potlut_row_shuff(&wb, &sb, {cnt}, {sym}, {len(s.count) - 1}u, "
                      f"{nz}, {kb}u, row, {K});\n")
        xt = self.ctype(st.src)
        if st.mode == "plut":
            tname, ab = self.table(st)
            prod = f"{tname}[((uint32_t)row[kk] << {ab}) | x[xr + ix]]"
        else:
            sw_codes = np.arange(2 << kb)
            mag = np.where((sw_codes & ((1 << kb) - 1)) < st.w_values.size,
                           st.w_values[np.minimum(sw_codes & ((1 << kb) - 1),
                                                  st.w_values.size - 1)], 0)
            wv = np.where(sw_codes >> kb, -mag, mag)
            wvn = self.const("int8_t", f"{fn}_wv", wv)
            unpack += (f"        for (kk = 0; kk < {K}; kk++) "
                       f"((int8_t *)row)[kk] = {wvn}[row[kk]];\n")
            prod = "(int32_t)((const int8_t *)row)[kk] * (int32_t)x[xr + ix]"
        # epilogue
        params = [f"const {xt} *x"]
        pre, epi = [], []
        acc_thr = st.acc_thr is not None  # the program decides these codes on the accumulator
        if acc_thr:
            flip, up, wn = st.acc_thr.flip, st.acc_thr.up, st.acc_thr.wn
            n = st.out_act.n - 1
            ot = code_ctype(st.out_act)
            params.append(f"{ot} *co")
            upn = self.const("int32_t", f"{fn}_up", up)
            pre.append(f"    const int32_t *up = {upn};\n")
            if wn is not None:
                wnn = self.const("int32_t", f"{fn}_wn", wn)
                pre.append(f"    const int32_t *wn = {wnn};\n")
            if flip.any():
                fl = self.const("uint8_t", f"{fn}_flip", flip)
                epi.append(f"            if ({fl}[o]) acc = -acc;\n")
            epi.append(f"            c0 = 0; for (j = 0; j < {n}; j++) c0 += acc > up[j];\n")
            if wn is not None:
                epi.append(f"            c1 = 0; for (j = 0; j < {n}; j++) c1 += acc <= wn[j];\n")
                if st.out_act.fmt == "sm":
                    epi.append(f"            co[yi] = (uint8_t)((c0 + c1) | (c1 ? "
                               f"{1 << st.out_act.kbits} : 0));\n")
                else:
                    epi.append("            co[yi] = (int8_t)(c0 - c1);\n")
            else:
                epi.append(f"            co[yi] = ({ot})c0;\n")
            chan_end = f"        up += {n};\n" + (f"        wn += {n};\n" if wn is not None else "")
        else:
            M, B, R = self.requant_consts(fn, st.requant)
            epi.append(f"            y = potlut_requant(acc, {M}[o], {B}[o], {R}[o]);\n")
            if st.residual is not None:
                params.append("const int32_t *res")
                epi.append("            y = potlut_sat((int64_t)y + res[yi]);\n")
            if st.relu:
                epi.append("            if (y < 0) y = 0;\n")
            if st.out_fixed is not None:
                params.append("int32_t *yo")
                epi.append("            yo[yi] = y;\n")
            if st.out_codes is not None:
                params.append(f"{code_ctype(st.out_act)} *co")
                thr = self.thresholds(fn, st.out_act)
                epi.append(f"            co[yi] = {self.quant_expr('y', st.out_act, thr)};\n")
            chan_end = ""
        params.append("uint8_t *row")
        group = ""
        if G > 1:
            group = (f"        if (gleft == 0) {{ gleft = {Og}; xg += {Cg * HW}; }}\n"
                     "        gleft--;\n")
        uses_c = any("potlut_c" in e for e in epi)
        decl = ["int32_t o, oy, ox, c, ky, kx, kk, iy, ix, iy0, ix0, xr, xc, xrow, yi = 0;"]
        if acc_thr:
            decl.append("int32_t c0, j;" if "c1" not in "".join(epi) else "int32_t c0, c1, j;")
        else:
            decl.append("int32_t y;")
        if uses_c:
            decl.append("uint32_t potlut_c;")
        if G > 1:
            decl.append("int32_t gleft = 0, xg = -" + str(Cg * HW) + ";")
        else:
            decl.append("const int32_t xg = 0;")
        body = [
            f"/* {st.module}: {st.op} {C}x{H}x{W} -> {n_out}x{OH}x{OW}, k{KH}x{KW} s{SH}x{SW} "
            f"p{PH}x{PW} d{DH}x{DW} g{G}, {st.mode}"
            + (f" ({st.bits_w}-bit weights, table reads and adds only)" if st.mode == "plut"
               else " (int8 x int8 MACs)") + " */",
            f"static POTLUT_NOINLINE void {fn}({', '.join(params)}) {{",
            *("    " + d + "\n" for d in decl),
            rd_init, *pre,
            f"    for (o = 0; o < {n_out}; o++) {{\n",
            group, unpack,
            f"        for (oy = 0, iy0 = -{PH}, xrow = xg - {PH * W}; oy < {OH}; "
            f"oy++, iy0 += {SH}, xrow += {SH * W}) {{\n",
            f"          for (ox = 0, ix0 = -{PW}; ox < {OW}; ox++, ix0 += {SW}, yi++) {{\n",
            "            int32_t acc = 0;\n",
            "            kk = 0;\n",
            f"            for (c = 0, xc = xrow; c < {Cg}; c++, xc += {HW}) {{\n",
            f"              for (ky = 0, iy = iy0, xr = xc; ky < {KH}; ky++, iy += {DH}, "
            f"xr += {DH * W}) {{\n",
            f"                if ((uint32_t)iy >= {H}u) {{ kk += {KW}; continue; }}\n",
            f"                for (kx = 0, ix = ix0; kx < {KW}; kx++, ix += {DW}, kk++)\n",
            f"                  if ((uint32_t)ix < {W}u) acc += {prod};\n",
            "              }\n",
            "            }\n",
            *epi,
            "          }\n",
            "        }\n",
            chan_end,
            "    }\n",
            "}",
        ]
        self.funcs.append("".join(b if b.endswith("\n") or not b else b + "\n" for b in body))
        self.layer_bytes[fn] = dict(weights=self.weight_bytes - wb0)
        args = [self.buf(st.src)]
        if not acc_thr:
            if st.residual is not None:
                args.append(self.buf(st.residual))
            if st.out_fixed is not None:
                args.append(self.buf(st.out_fixed))
            if st.out_codes is not None:
                args.append(self.buf(st.out_codes))
        else:
            args.append(self.buf(st.out_codes))
        args.append("row")
        self.calls.append(f"    {fn}({', '.join(args)});")

    # -------------------------------------------------------------- other steps
    def size(self, buf: str) -> int:
        return int(np.prod(self.prog.shapes[buf]))

    def step(self, i: int, st) -> None:
        fn = f"{self.name}_s{i}"
        if isinstance(st, Quantize):
            thr = self.thresholds(fn, st.act)
            n = self.size(st.src)
            uses_c = st.act.signed
            self.funcs.append(
                f"static void {fn}(const int32_t *x, {code_ctype(st.act)} *co) {{\n"
                f"    int32_t i;{' uint32_t potlut_c;' if uses_c else ''}\n"
                f"    for (i = 0; i < {n}; i++) co[i] = "
                f"{self.quant_expr('x[i]', st.act, thr)};\n}}")
            self.calls.append(f"    {fn}({self.buf(st.src)}, {self.buf(st.dst)});")
        elif isinstance(st, Affine):
            M, B, R = self.requant_consts(fn, st.requant)
            shp = self.prog.shapes[st.src]
            C, HW = shp[0], int(np.prod(shp[1:]))
            self.funcs.append(
                f"static void {fn}(const int32_t *x, int32_t *y) {{\n"
                f"    int32_t c, p;\n"
                f"    for (c = 0; c < {C}; c++)\n"
                f"        for (p = 0; p < {HW}; p++) y[c * {HW} + p] = "
                f"potlut_requant(x[c * {HW} + p], {M}[c], {B}[c], {R}[c]);\n}}")
            self.calls.append(f"    {fn}({self.buf(st.src)}, {self.buf(st.dst)});")
        elif isinstance(st, Relu):
            n = self.size(st.src)
            self.calls.append(f"    {{ int32_t i; const int32_t *a = {self.buf(st.src)}; "
                              f"int32_t *d = {self.buf(st.dst)};\n"
                              f"      for (i = 0; i < {n}; i++) d[i] = a[i] > 0 ? a[i] : 0; }}")
        elif isinstance(st, Add):
            n = self.size(st.a)
            self.calls.append(f"    {{ int32_t i; const int32_t *a = {self.buf(st.a)}, "
                              f"*b = {self.buf(st.b)}; int32_t *d = {self.buf(st.dst)};\n"
                              f"      for (i = 0; i < {n}; i++) "
                              "d[i] = potlut_sat((int64_t)a[i] + b[i]); }")
        elif isinstance(st, Pool):
            self.pool(fn, st)
        elif isinstance(st, Shortcut):
            C, H, W = self.prog.shapes[st.src]
            Co, OH, OW = self.prog.shapes[st.dst]
            s, b = st.stride, st.pad // 2
            self.funcs.append(
                f"static void {fn}(const int32_t *x, int32_t *y) {{\n"
                f"    int32_t c, oy, ox;\n"
                f"    memset(y, 0, sizeof(int32_t) * {Co * OH * OW});\n"
                f"    for (c = 0; c < {C}; c++)\n"
                f"        for (oy = 0; oy < {OH}; oy++)\n"
                f"            for (ox = 0; ox < {OW}; ox++)\n"
                f"                y[((c + {b}) * {OH} + oy) * {OW} + ox] = "
                f"x[(c * {H} + oy * {s}) * {W} + ox * {s}];\n}}")
            self.calls.append(f"    {fn}({self.buf(st.src)}, {self.buf(st.dst)});")
        elif isinstance(st, Cat):
            off = 0
            for src in st.srcs:
                n = self.size(src)
                self.calls.append(f"    memcpy({self.buf(st.dst)} + {off}, {self.buf(src)}, "
                                  f"sizeof(int32_t) * {n});")
                off += n
        elif isinstance(st, Reshape):
            pass  # same bytes (the arena plan aliases them)
        else:  # pragma: no cover
            raise TypeError(type(st).__name__)

    def pool(self, fn: str, st: Pool) -> None:
        C, H, W = self.prog.shapes[st.src]
        _, OH, OW = self.prog.shapes[st.dst]
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = st.kernel, st.stride, st.padding, st.dilation
        if st.kind == "avg":
            d = st.divisor or kh * kw
            init, acc, fin = ("int64_t s = 0;", "s += x[(c * H_ + iy) * W_ + ix];",
                              f"y[(c * {OH} + oy) * {OW} + ox] = "
                              f"(int32_t)potlut_floordiv(s, {d});")
        else:
            init, acc, fin = ("int64_t s = INT64_MIN;",
                              "if (x[(c * H_ + iy) * W_ + ix] > s) s = x[(c * H_ + iy) * W_ + ix];",
                              f"y[(c * {OH} + oy) * {OW} + ox] = (int32_t)s;")
        acc = acc.replace("H_", str(H)).replace("W_", str(W))
        self.funcs.append(
            f"static void {fn}(const int32_t *x, int32_t *y) {{\n"
            f"    int32_t c, oy, ox, i, j;\n"
            f"    for (c = 0; c < {C}; c++)\n"
            f"      for (oy = 0; oy < {OH}; oy++)\n"
            f"        for (ox = 0; ox < {OW}; ox++) {{\n"
            f"          {init}\n"
            f"          for (i = 0; i < {kh}; i++)\n"
            f"            for (j = 0; j < {kw}; j++) {{\n"
            f"              int32_t iy = oy * {sh} - {ph} + i * {dh}, "
            f"ix = ox * {sw} - {pw} + j * {dw};\n"
            f"              if (iy < 0 || iy >= {H} || ix < 0 || ix >= {W}) continue;\n"
            f"              {acc}\n"
            f"            }}\n"
            f"          {fin}\n"
            f"        }}\n}}")
        self.calls.append(f"    {fn}({self.buf(st.src)}, {self.buf(st.dst)});")

    # -------------------------------------------------------------- buffers
    def buf(self, b: str) -> str:
        return "B_" + c_ident(self.plan.group[b])

    def plan_buffers(self) -> None:
        names: dict[str, int] = {}
        for st in self.prog.steps:
            from potlut.infer.arena import step_io

            reads, writes = step_io(st)
            for b in reads + writes:
                names[b] = self.nbytes(b)
        self.out = self.prog.outputs[0]
        self.plan = plan_arena(self.prog, names, {self.input.dst, self.out})

    # -------------------------------------------------------------- files
    def emit(self) -> CModel:
        self.plan_buffers()
        for i, st in enumerate(self.prog.steps):
            if isinstance(st, Layer):
                self.layer(i, st)
            elif not isinstance(st, InputQuant):
                self.step(i, st)
        N = self.name
        arena_bytes = self.plan.bytes + (self.kmax + 3) // 4 * 4
        in_shape = tuple(self.prog.in_shape)
        in_size = int(np.prod(in_shape))
        out_size = self.size(self.out)
        lut = self.input_table()
        ptrs = []
        in_group = self.plan.group[self.input.dst]
        out_group = self.plan.group[self.out]
        seen = set()
        for b in sorted(self.plan.group):
            g = self.plan.group[b]
            if g in seen:
                continue
            seen.add(g)
            ct = self.ctype(b) if g == b else self.ctype(g)
            if g == in_group:
                ptrs.append(f"    const {ct} *B_{c_ident(g)} = (const {ct} *)codes;")
            elif g == out_group:
                ptrs.append(f"    int32_t *B_{c_ident(g)} = logits;")
            else:
                ptrs.append(f"    {ct} *B_{c_ident(g)} = ({ct} *)(arena + "
                            f"{self.plan.offset[g]});")
        used = "\n".join(self.calls)
        ptrs = [p for p in ptrs if re.search(r"\b" + p.split("*")[1].split("=")[0].strip()
                                             + r"\b", used)]
        in_act = self.input.act
        header = HEADER.format(
            N=N, NU=N.upper(), in_shape="x".join(map(str, in_shape)), in_size=in_size,
            out_size=out_size, F=self.prog.frac_bits, arena=arena_bytes,
            weights=self.weights, in_fmt=(
                "sign-magnitude codes (negative << k | code)" if in_act.fmt == "sm"
                else f"{in_act.bits}-bit fixed-point values (+-code)"),
            norm=f"(p / {self.norm.scale:g} - mean) / std, mean {list(self.norm.mean)}, "
                 f"std {list(self.norm.std)}")
        source = "\n".join([
            f"/* {N}.c: generated by potlut export-c from the integer program (see {N}.h). */",
            f'#include "{N}.h"', "#include <string.h>", RUNTIME,
            f"static uint32_t {N}_arena[{arena_bytes // 4}];",
            f"static const uint8_t {N}_in_lut[] = {{\n{_ints(lut)}\n}};",
            *self.data, *self.funcs,
            f"void {N}_quantize_input(const uint8_t *pixels, int8_t *codes) {{\n"
            f"    int32_t c, i;\n"
            f"    for (c = 0; c < {in_shape[0]}; c++)\n"
            f"        for (i = 0; i < {in_size // in_shape[0]}; i++, pixels++, codes++)\n"
            f"            *codes = (int8_t){N}_in_lut[c * 256 + *pixels];\n}}",
            f"void {N}_run(const int8_t *codes, int32_t *logits) {{\n"
            f"    uint8_t *arena = (uint8_t *){N}_arena;\n"
            f"    uint8_t *row = arena + {self.plan.bytes};\n"
            + "\n".join(ptrs) + "\n" + used + "\n    (void)row;\n}\n",
        ])
        return CModel(N, header, source, arena_bytes, self.plan.lower_bound()
                      + (self.kmax + 3) // 4 * 4, self.low_bit, self.int8, in_size,
                      out_size, self.weights, self.weight_bytes, self.table_bytes, self.plan)

    def input_table(self) -> np.ndarray:
        """Codes of every (channel, pixel value): normalization and first quantizer folded."""
        from potlut.infer.engine import quantize_input

        C = self.prog.in_shape[0]
        if len(self.norm.mean) != C:
            raise UnsupportedModelError(f"normalization has {len(self.norm.mean)} channels, "
                                        f"the model {C}")
        pix = np.broadcast_to(np.arange(256, dtype=np.uint8)[None, None, :], (C, 1, 256))
        x = self.norm.image(pix)
        codes = quantize_input(x, self.input.act).reshape(C, 256).astype(np.int64)
        return codes & 0xFF  # the int8 bytes, as stored


HEADER = """/* {N}.h: generated by potlut export-c (C99; no malloc, no floating point).
 *
 * Input : {in_shape} ({in_size} codes, C x H x W): {in_fmt}.
 *         {N}_quantize_input() makes them from uint8 pixels, normalization
 *         {norm} and the first layer's quantizer folded into a table.
 * Output: {out_size} int32 logits in units of 2^-{F} (real logit = value / 2^{F}).
 * RAM   : one static arena of {N_ARENA} bytes (buffer liveness planned at generation).
 * Flash : weights ({weights}), P-LUT rows, per-channel requantization constants.
 * Not reentrant: the arena is shared by every call.
 */
#ifndef {NU}_H
#define {NU}_H
#include <stdint.h>

#define {NU}_IN_SIZE {in_size}
#define {NU}_OUT_SIZE {out_size}
#define {NU}_FRAC_BITS {F}
#define {N}_ARENA_BYTES {arena}

void {N}_quantize_input(const uint8_t *pixels, int8_t *codes);
void {N}_run(const int8_t *codes, int32_t *logits);

#endif
""".replace("{N_ARENA}", "{arena}")


def print_c(prog: Program, name: str, weights: str = "packed",
            norm: Normalization | None = None) -> CModel:
    """C99 header and source of ``prog`` (``weights``: ``packed`` or ``shuff``).

    ``norm`` says how raw pixels become the model input (default ``p / 255``).
    """
    C = prog.in_shape[0]
    norm = norm or Normalization(255.0, (0.0,) * C, (1.0,) * C)
    return _Printer(prog, name, weights, norm).emit()
