"""Verilog layer engine: one real conv layer streamed through the S-Huff decoder and a window unit.

Per output channel the engine first lets the decoder fill a weight buffer with that
channel's ``Cin*K*K`` signed codes (one per cycle, straight from the file's coded
stream), then walks the output pixels; for each pixel it feeds the window unit one input
channel per cycle (its KxK activation window, zero outside the map, and the buffered
weights). Every finished accumulator leaves on ``out_valid`` in the engine's order
``[O, OH*OW]``. Activations sit in a ROM loaded from the Python engine's codes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from potlut.deploy.rtl_pe import PeSpec, RtlError, layer_spec
from potlut.deploy.rtl_shuff import (
    CodedLayer,
    coded_layer,
    decoder_name,
    decoder_verilog,
    sign_bits,
    stream_words,
)
from potlut.deploy.rtl_sim import ints, run_sim
from potlut.deploy.rtl_window import window_name, window_verilog


def check_layer(layer) -> None:
    """Refuse what the engine does not express: grouped, dilated, non-square kernels."""
    kh, kw = layer.kernel
    if layer.op != "conv2d" or kh != kw or layer.groups != 1 or layer.dilation != (1, 1) \
            or layer.stride[0] != layer.stride[1] or layer.padding[0] != layer.padding[1]:
        raise RtlError(f"layer {layer.module}: the layer engine runs square, ungrouped, "
                       "undilated conv2d layers with equal strides/paddings")


def engine_name(layer, kind: str) -> str:
    return f"{kind}_layer_" + "".join(c if c.isalnum() else "_" for c in layer.module)


def engine_verilog(layer, spec: PeSpec, cl: CodedLayer, kind: str, act_file: str,
                   words_file: str, signs_file: str) -> str:
    """The engine module, its window unit and its decoder (one Verilog text)."""
    check_layer(layer)
    C, H, W = layer.in_shape
    n_out = layer.out_channels
    K = layer.kernel[0]
    S, P = layer.stride[0], layer.padding[0]
    OH, OW = layer.out_shape[1], layer.out_shape[2]
    T, b = K * K, spec.bits
    ck = C * T
    if cl.count != n_out * ck:
        raise RtlError(f"layer {layer.module}: stream holds {cl.count} codes, "
                       f"{n_out * ck} expected")
    cw = max(1, (max(C, n_out, OH, OW, H, W) + 1).bit_length()) + 1
    bw = max(1, ck.bit_length())
    taps_a, taps_w = [], []
    for i in range(K):
        for j in range(K):
            t = i * K + j
            taps_a.append(f"      a_vec[{t * b + b - 1}:{t * b}] = act_at(yb + {i}, xb + {j});")
            taps_w.append(f"      w_vec[{t * b + b - 1}:{t * b}] = wbuf[c * {T} + {t}];")
    win = window_name(spec, kind, K)
    v = f"""module {engine_name(layer, kind)} (
  input  wire clk, rst,
  output wire signed [{spec.acc_bits - 1}:0] acc,
  output wire out_valid,
  output reg  done
);
  localparam LOAD = 2'd0, RUN = 2'd1, FIN = 2'd2;
  reg [1:0] state;
  reg [{b - 1}:0] act [0:{C * H * W - 1}];
  initial $readmemh("{act_file}", act);
  reg [{b - 1}:0] wbuf [0:{ck - 1}];
  reg [{bw - 1}:0] issued, got;
  reg signed [{cw - 1}:0] o, oy, ox, c, yb, xb;
  wire fire, dvalid, ddone;
  wire [{b - 1}:0] dcode;
  {decoder_name(cl)} dec (.clk(clk), .rst(rst), .ready(state == LOAD && issued != {bw}'d{ck}),
      .fire(fire), .code(dcode), .valid(dvalid), .done(ddone));
  function [{b - 1}:0] act_at(input signed [{cw - 1}:0] y, input signed [{cw - 1}:0] x);
    begin
      if (y < 0 || y >= {H} || x < 0 || x >= {W}) act_at = {b}'d0;
      else act_at = act[(c * {H} + y) * {W} + x];
    end
  endfunction
  reg [{T * b - 1}:0] w_vec, a_vec;
  always @* begin
{chr(10).join(taps_a)}
{chr(10).join(taps_w)}
  end
  wire running = (state == RUN);
  {win} unit (.clk(clk), .rst(rst), .en(running), .clr(running && c == 0),
      .last(running && c == {C - 1}), .w(w_vec), .a(a_vec), .acc(acc), .valid(out_valid));
  always @(posedge clk) begin
    if (rst) begin
      state <= LOAD; issued <= 0; got <= 0; done <= 1'b0;
      o <= 0; oy <= 0; ox <= 0; c <= 0; yb <= -{P}; xb <= -{P};
    end else begin
      if (fire) issued <= issued + 1'b1;
      if (dvalid) begin
        wbuf[got] <= dcode;
        got <= got + 1'b1;
      end
      case (state)
        LOAD: if (got == {bw}'d{ck}) begin
          state <= RUN; c <= 0; oy <= 0; ox <= 0; yb <= -{P}; xb <= -{P};
        end
        RUN: begin
          if (c != {C - 1}) c <= c + 1;
          else begin
            c <= 0;
            if (ox != {OW - 1}) begin ox <= ox + 1; xb <= xb + {S}; end
            else begin
              ox <= 0; xb <= -{P};
              if (oy != {OH - 1}) begin oy <= oy + 1; yb <= yb + {S}; end
              else begin
                issued <= 0; got <= 0;
                if (o != {n_out - 1}) begin o <= o + 1; state <= LOAD; end
                else state <= FIN;
              end
            end
          end
        end
        FIN: done <= 1'b1;
        default: state <= FIN;
      endcase
    end
  end
endmodule
"""
    return v + window_verilog(spec, kind, K) + "\n" + decoder_verilog(cl, words_file, signs_file)


def engine_tb(layer, spec: PeSpec, kind: str) -> str:
    """Testbench: run the engine to ``done``; print ``ACC <value>`` per output and cycles."""
    return f"""`timescale 1ns/1ps
module tb;
  reg clk = 1'b0, rst = 1'b1;
  wire signed [{spec.acc_bits - 1}:0] acc;
  wire out_valid, done;
  integer cycles = 0;
  {engine_name(layer, kind)} dut (.clk(clk), .rst(rst), .acc(acc), .out_valid(out_valid),
      .done(done));
  always #5 clk = ~clk;
  always @(posedge clk) begin
    if (out_valid) $display("ACC %0d", acc);
    if (!rst) cycles = cycles + 1;
  end
  initial begin
    @(posedge clk); #1 rst = 1'b0;
    wait (done); repeat (4) @(posedge clk);
    $display("CYCLES %0d", cycles);
    $finish;
  end
endmodule
"""


def write_layer(path: str | Path, layer, codes: np.ndarray, kind: str,
                outdir: Path) -> tuple[Path, str]:
    """Write the engine of ``layer`` (weights from the .potlut at ``path``, input ``codes``
    ``[C, H, W]``) with its ROM files into ``outdir``; returns (Verilog file, top module)."""
    spec = layer_spec(layer)
    cl = coded_layer(path, layer.module)
    outdir.mkdir(parents=True, exist_ok=True)
    base = engine_name(layer, kind)
    codes = np.asarray(codes, dtype=np.int64).reshape(-1)
    if codes.size != int(np.prod(layer.in_shape)):
        raise RtlError(f"layer {layer.module}: {codes.size} input codes, "
                       f"{int(np.prod(layer.in_shape))} expected")
    (outdir / f"{base}_act.hex").write_text("\n".join(f"{int(v):x}" for v in codes) + "\n")
    (outdir / f"{base}_words.hex").write_text("\n".join(stream_words(cl)) + "\n")
    (outdir / f"{base}_signs.bin").write_text("\n".join(sign_bits(cl)) + "\n")
    src = outdir / f"{base}.v"
    src.write_text(engine_verilog(layer, spec, cl, kind, f"{base}_act.hex",
                                  f"{base}_words.hex", f"{base}_signs.bin"))
    return src, base


def simulate_layer(path: str | Path, layer, codes: np.ndarray, kind: str,
                   workdir: Path) -> tuple[np.ndarray, int]:
    """Run the engine of ``layer`` on one image's input codes; ``(acc [O, OH*OW], cycles)``."""
    src, base = write_layer(path, layer, codes, kind, workdir)
    tb = workdir / f"tb_{base}.v"
    tb.write_text(engine_tb(layer, layer_spec(layer), kind))
    lines = run_sim([tb, src], "tb", workdir)
    acc = ints(lines, "ACC")
    n = layer.out_channels * layer.out_hw
    if acc.size != n:
        raise RtlError(f"layer {layer.module}: {acc.size} accumulators out, {n} expected")
    return acc.reshape(layer.out_channels, layer.out_hw), int(ints(lines, "CYCLES")[0])
