"""``potlut export-rtl``: Verilog of one P-LUT layer (S-Huff decoder, window unit, engine)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from potlut.cli.app import app, user_errors
from potlut.errors import PotlutConfigError


@app.command("export-rtl")
@user_errors
def export_rtl_cmd(
    file: Path = typer.Argument(..., help=".potlut model file (S-Huff coded)"),
    layer: str = typer.Option(..., "--layer", help="conv layer to build, e.g. features.3"),
    out: Path = typer.Option(Path("rtl"), "--out", help="directory for Verilog and ROM files"),
    pe: str = typer.Option("plut", "--pe", help="processing element: plut or shift"),
    data: str = typer.Option("digits", "--data", help="digits or KIND:DIR: input image source"),
    image: int = typer.Option(0, "--image", help="test image whose layer input fills the ROM"),
    simulate: bool = typer.Option(False, "--simulate",
                                  help="run the testbench (iverilog) and compare with the engine"),
) -> None:
    """Write the layer engine of LAYER (weights from FILE's S-Huff stream, activations of one
    test image from the integer engine), its testbench and the engine's accumulators."""
    import numpy as np

    from potlut import data as data_mod
    from potlut.compress import load
    from potlut.deploy.rtl_layer import engine_tb, simulate_layer, write_layer
    from potlut.deploy.rtl_pe import KINDS, RtlError, layer_spec
    from potlut.infer.program import lower
    from potlut.infer.reference import accumulate, run_reference

    if pe not in KINDS:
        raise RtlError(f"--pe must be one of {', '.join(KINDS)}, got {pe!r}")
    prog = lower(load(file))
    names = [st.module for st in prog.layers()]
    st = next((s for s in prog.layers() if s.module == layer), None)
    if st is None:
        raise PotlutConfigError(f"{file} has no layer {layer!r}; layers: {', '.join(names)}")
    spec = layer_spec(st)
    bundle = data_mod.load(data)
    if not 0 <= image < len(bundle.test):
        raise PotlutConfigError(f"--image must be in 0..{len(bundle.test) - 1}, got {image}")
    x = bundle.test[image][0][None].numpy()
    env = run_reference(prog, x, keep=True)
    codes = np.asarray(env[st.src])[0]
    acc = np.asarray(accumulate(st, env[st.src]))[0]
    src, base = write_layer(file, st, codes, pe, out)
    (out / f"tb_{base}.v").write_text(engine_tb(st, spec, pe))
    (out / f"{base}_expected.txt").write_text("\n".join(str(int(v)) for v in acc.reshape(-1))
                                              + "\n")
    result = {"layer": layer, "pe": pe, "verilog": str(src), "top": base,
              "bits": spec.bits, "table_entries": int(spec.plut.entries.size),
              "acc_bits": spec.acc_bits, "outputs": int(acc.size)}
    if simulate:
        got, cycles = simulate_layer(file, st, codes, pe, out)
        result.update(cycles=cycles, bit_exact=bool(np.array_equal(got, acc)))
        if not result["bit_exact"]:
            print(json.dumps(result))
            raise typer.Exit(1)
    print(json.dumps(result))
