"""What storing BatchNorm in fewer bits costs: file overhead against accuracy (issue 17).

Loads a trained quantized ResNet20 saved by ``bench_accuracy.py`` (``{"model", "bits",
"opts"}``), and for each BatchNorm precision rounds a copy with ``snap_batchnorm`` and
reports the file's size and overhead, Top-1 on the validation and training images, and how
many predictions differ from the float32 BatchNorm. Bits 0 means float32 (format v2's
precision, stored raw). Example (about 10 minutes on 2 shared cores)::

    python benchmarks/bench_bn_precision.py /work/acc_cache/recipe-4_s0_e20_q20.pt --bits 0 8 7 6
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
from pathlib import Path

import torch

from potlut import data as data_mod
from potlut import models
from potlut.nn.convert import QuantSpec, convert
from potlut.nn.export import compress_model, export_graph, snap_batchnorm

sys.path.insert(0, str(Path(__file__).parent))
from bench_accuracy import DEFAULT_DATA  # noqa: E402


def predictions(model: torch.nn.Module, ds) -> tuple[torch.Tensor, torch.Tensor]:
    """Argmax of ``model`` on every image of ``ds`` and the labels."""
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    y = torch.tensor([ds[i][1] for i in range(len(ds))])
    with torch.no_grad():
        return torch.cat([model(x[i:i + 256]).argmax(1) for i in range(0, len(x), 256)]), y


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("state", help="a .pt saved by bench_accuracy.py")
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--bits", type=int, nargs="+", default=[0, 8, 7, 6])
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    bundle = data_mod.load(args.data)
    saved = torch.load(args.state, weights_only=False)
    base = convert(models.build("resnet20", bundle.num_classes, bundle.in_channels),
                   QuantSpec(bits=saved["bits"], act_signed=saved["opts"]["act_signed"]))
    base.load_state_dict(saved["model"])
    base.eval()
    ref = {split: predictions(base, getattr(bundle, split)) for split in ("test", "train")}
    rows = []
    for bits in args.bits:
        model = snap_batchnorm(copy.deepcopy(base), bits) if bits else base
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "m.potlut"
            if bits:
                st = compress_model(model, bundle.in_shape, path)
            else:  # float32 BatchNorm, as format v2 stored it: export without rounding
                from potlut.compress.bounds import file_stats
                from potlut.compress.container import save
                graph = export_graph(model, bundle.in_shape)
                stats = file_stats(graph, save(graph, path))
                st = {"file_bytes": stats["total"]["final_bytes"],
                      "overhead_bytes": stats["overhead_bytes"]}
        row = {"bn_bits": bits or 32, "file_bytes": st["file_bytes"],
               "overhead_bytes": st["overhead_bytes"],
               "overhead_share": round(st["overhead_bytes"] / st["file_bytes"], 4)}
        for split, (p0, y) in ref.items():
            p, _ = predictions(model, getattr(bundle, split))
            row[f"{split}_top1"] = round(100 * float((p == y).float().mean()), 2)
            row[f"{split}_changed"] = f"{int((p != p0).sum())}/{len(y)}"
        rows.append(row)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
