"""Verilog S-Huff decoder: canonical Huffman, one weight code per cycle, plus its sign bits.

The block reads one layer's coded stream exactly as the .potlut file stores it
(:mod:`potlut.compress.shuff`: code lengths, MSB-first code stream, packed signs of the
non-zero weights). A 64-bit buffer is refilled 32 bits at a time; each cycle the top
``MAXL`` bits are compared with the per-length limits of the canonical code (the
decoder of :func:`~potlut.compress.shuff.decode_symbols`, in gates), the length picks the
symbol's rank, a ROM maps rank to code, and a non-zero code takes the next sign bit.
The output is the engine's signed code ``neg << k | code``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from potlut.compress.container import read
from potlut.compress.shuff import split_blob
from potlut.deploy.rtl_pe import RtlError
from potlut.infer.plut import _code_bits


@dataclass(frozen=True)
class CodedLayer:
    """One layer's S-Huff blob, split: code lengths, code stream, sign stream."""

    name: str
    shape: tuple[int, ...]
    lengths: np.ndarray  # uint8 [n_codes]
    nbits: int
    stream: bytes
    signs: bytes

    @property
    def count(self) -> int:
        return int(np.prod(self.shape))

    @property
    def n_codes(self) -> int:
        return int(self.lengths.size)


def coded_layer(path: str | Path, module: str) -> CodedLayer:
    """The S-Huff blob of layer ``module`` in a .potlut file (as stored, not re-encoded)."""
    _, info = read(path)
    for e in info.arrays:
        if e.name == f"{module}.weight" and e.encoding != "raw":
            if e.encoding != "shuff":
                raise RtlError(f"{path}: layer {module} is coded with {e.encoding!r}; the "
                               "hardware decoder reads S-Huff (compress with --coder shuff)")
            blob = info.data[e.offset:e.offset + e.length]
            cb = next(a for a in info.arrays if a.name == e.codebook)
            lengths, _, head, nbits = split_blob(blob, int(np.prod(e.shape)), int(cb.shape[0]))
            nbytes = (nbits + 7) // 8
            return CodedLayer(module, tuple(e.shape), lengths.astype(np.uint8), int(nbits),
                              blob[head:head + nbytes], blob[head + nbytes:])
    raise RtlError(f"{path}: no coded weight stream for layer {module!r}")


def decoder_name(cl: CodedLayer) -> str:
    return "shuff_dec_" + "".join(c if c.isalnum() else "_" for c in cl.name)


def stream_words(cl: CodedLayer) -> list[str]:
    """The code stream as 32-bit big-endian words (hex), two zero words of padding."""
    data = cl.stream + b"\0" * (-len(cl.stream) % 4 + 8)
    return [f"{w:08x}" for w in struct.unpack(f">{len(data) // 4}I", data)]


def sign_bits(cl: CodedLayer) -> list[str]:
    """One line per sign bit of the non-zero weights, in stream order (at least one line)."""
    bits = np.unpackbits(np.frombuffer(cl.signs, np.uint8)) if cl.signs else np.zeros(0)
    return [str(int(b)) for b in bits] or ["0"]


def decoder_verilog(cl: CodedLayer, words_file: str, signs_file: str) -> str:
    """Module ``decoder_name(cl)``: emits ``count`` signed codes, one per cycle while ``ready``.

    Ports: ``ready`` (the consumer takes a code this cycle), ``fire`` (a code is decoded
    this cycle), registered ``code``/``valid`` one cycle later, ``done`` after the last.
    """
    lengths = cl.lengths.astype(np.int64)
    used = np.flatnonzero(lengths)
    if used.size == 0:
        raise RtlError(f"layer {cl.name}: no symbol has a code")
    maxl = int(lengths.max())
    if maxl > 32:
        raise RtlError(f"layer {cl.name}: code length {maxl} > 32 bits")
    bl = np.bincount(lengths[used], minlength=maxl + 1)
    first = np.zeros(maxl + 1, np.int64)
    for b in range(2, maxl + 1):
        first[b] = (first[b - 1] + bl[b - 1]) << 1
    limits = [int((first[b] + bl[b]) << (maxl - b)) for b in range(1, maxl + 1)]
    offsets = np.concatenate([[0], np.cumsum(bl[1:])])  # symbols with length < b
    order = used[np.lexsort((used, lengths[used]))]  # canonical order
    k = _code_bits(cl.n_codes)
    nw = len(stream_words(cl))
    ns = len(sign_bits(cl))
    aw = max(1, nw.bit_length())
    sw = max(1, ns.bit_length())
    cw = max(1, cl.count.bit_length())
    rw = max(1, (len(order) - 1).bit_length() + 1)
    lw = max(1, maxl.bit_length())
    lines = [
        f"module {decoder_name(cl)} (",
        "  input  wire clk, rst, ready,",
        "  output wire fire,",
        f"  output reg  [{k}:0] code,",
        "  output reg  valid,",
        "  output wire done",
        ");",
        f"  reg [31:0] words [0:{nw - 1}];",
        f"  reg signs [0:{ns - 1}];",
        f'  initial begin $readmemh("{words_file}", words); $readmemb("{signs_file}", signs); end',
        "  reg [63:0] buffer;",
        "  reg [6:0] cnt;",
        f"  reg [{aw - 1}:0] waddr;",
        f"  reg [{sw - 1}:0] sidx;",
        f"  reg [{cw - 1}:0] nsym;",
        f"  wire [{maxl - 1}:0] win = buffer[63:{64 - maxl}];",
        f"  reg [{lw - 1}:0] len;",
        f"  reg [{rw - 1}:0] rank;",
        f"  reg [{k - 1}:0] sym;",
        "  // code length: the first length whose canonical limit exceeds the window",
        "  always @* begin",
    ]
    lines.append(f"    len = {lw}'d{maxl};")
    for b in range(maxl - 1, 0, -1):  # last assignment wins: the shortest matching length
        lines.append(f"    if (win < {maxl}'d{limits[b - 1]}) len = {lw}'d{b};")
    lines += ["  end", "  always @* begin", "    case (len)"]
    for b in range(1, maxl + 1):
        lines.append(f"      {lw}'d{b}: rank = {rw}'d{int(offsets[b - 1])} + "
                     f"(win >> {maxl - b}) - {rw}'d{int(first[b])};")
    lines += [f"      default: rank = {rw}'d0;", "    endcase", "  end",
              "  always @* begin", "    case (rank)"]
    lines += [f"      {rw}'d{r}: sym = {k}'d{int(s)};" for r, s in enumerate(order)]
    lines += [
        f"      default: sym = {k}'d0;", "    endcase", "  end",
        f"  assign done = (nsym == {cw}'d{cl.count});",
        f"  assign fire = ready && !done && (cnt >= 7'd{maxl});",
        "  wire [6:0] used = fire ? len : 7'd0;",
        "  wire [6:0] c1 = cnt - used;",
        "  wire refill = (c1 <= 7'd32);",
        f"  wire [31:0] word = (waddr < {aw}'d{nw}) ? words[waddr] : 32'd0;",
        "  wire [63:0] incoming = {word, 32'd0} >> c1;",
        "  wire neg = (sym != 0) && signs[sidx];",
        "  always @(posedge clk) begin",
        "    if (rst) begin",
        "      buffer <= 64'd0; cnt <= 7'd0; waddr <= 0; sidx <= 0; nsym <= 0;",
        "      valid <= 1'b0; code <= 0;",
        "    end else begin",
        "      buffer <= (buffer << used) | (refill ? incoming : 64'd0);",
        "      cnt <= c1 + (refill ? 7'd32 : 7'd0);",
        "      if (refill) waddr <= waddr + 1'b1;",
        "      valid <= fire;",
        "      if (fire) begin",
        "        code <= {neg, sym};",
        "        nsym <= nsym + 1'b1;",
        "        if (sym != 0) sidx <= sidx + 1'b1;",
        "      end",
        "    end",
        "  end",
        "endmodule",
        "",
    ]
    return "\n".join(lines)


def decoder_tb(cl: CodedLayer) -> str:
    """Testbench: run the decoder with ``ready`` always high; print ``SYM <signed code>``."""
    return f"""`timescale 1ns/1ps
module tb;
  reg clk = 1'b0, rst = 1'b1;
  wire fire, valid, done;
  wire [{_code_bits(cl.n_codes)}:0] code;
  integer cycles = 0;
  {decoder_name(cl)} dut (.clk(clk), .rst(rst), .ready(1'b1), .fire(fire), .code(code),
                          .valid(valid), .done(done));
  always #5 clk = ~clk;
  always @(posedge clk) begin
    if (valid) $display("SYM %0d", code);
    if (!rst) cycles = cycles + 1;
  end
  initial begin
    @(posedge clk); #1 rst = 1'b0;
    wait (done); @(posedge clk); #1;
    $display("CYCLES %0d", cycles);
    $finish;
  end
endmodule
"""
