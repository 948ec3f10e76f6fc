"""File size, overhead and entropy gap of one model written as format v3 and v4 (issue 17).

v4 writes the architecture JSON compactly and gives small layers over many codes the 5-byte
truncated binary code table; v3 is the same graph in the old layout. Models: a ResNet20
saved by ``bench_accuracy.py`` (``{"model", "bits", "opts"}``, BatchNorm folded to 8 bits
as ``potlut compress`` does) and, with ``--digits``, the SmallCNN of ``potlut run
--epochs 1 --qat-epochs 1`` (seed 0, trained here: about 2 minutes). Example::

    python benchmarks/bench_format.py /work/acc_cache/recipe-4_s0_e20_q20.pt --digits
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

from potlut import data as data_mod
from potlut import models
from potlut.compress.bounds import file_stats
from potlut.compress.container import encode
from potlut.compress.graph import ModelGraph
from potlut.nn.convert import QuantSpec, convert
from potlut.nn.export import export_graph, snap_batchnorm

sys.path.insert(0, str(Path(__file__).parent))
from bench_accuracy import DEFAULT_DATA  # noqa: E402


def resnet_graph(state: str, data: str) -> ModelGraph:
    bundle = data_mod.load(data)
    saved = torch.load(state, weights_only=False)
    q = convert(models.build("resnet20", bundle.num_classes, bundle.in_channels),
                QuantSpec(bits=saved["bits"], act_signed=saved["opts"]["act_signed"]))
    q.load_state_dict(saved["model"])
    return export_graph(snap_batchnorm(q.eval()), bundle.in_shape)


def digits_graph() -> ModelGraph:
    from potlut.pipeline import RunConfig, load_quantized, run
    cfg = RunConfig(epochs=1, qat_epochs=1, seed=0, device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        run(cfg, Path(tmp), progress=False)
        q = load_quantized(Path(tmp), cfg)
    return export_graph(snap_batchnorm(q.eval()), data_mod.load(cfg.data).in_shape)


def rows(name: str, graph: ModelGraph) -> None:
    for version in (3, 4):
        _, info = encode(graph, version=version)
        st = file_stats(graph, info)
        print(json.dumps({
            "model": name, "version": version, "file_bytes": info.file_bytes,
            "arch_json_bytes": info.arch_bytes, "overhead_bytes": st["overhead_bytes"],
            "overhead_share": round(st["overhead_bytes"] / info.file_bytes, 4),
            "bound_gap": st["bound_gap"], "bound_gap_with_tables": st["bound_gap_with_tables"],
        }), flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("state", nargs="?", help="a ResNet20 .pt saved by bench_accuracy.py")
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--digits", action="store_true", help="also the digits SmallCNN")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.state:
        rows("resnet20", resnet_graph(args.state, args.data))
    if args.digits:
        rows("small_cnn", digits_graph())


if __name__ == "__main__":
    main()
