"""Fake-quantized model vs integer engine on trained ResNet20 checkpoints of bench_accuracy.py.

For each ``--cache`` file (``{"model": state_dict, "bits", "opts"}``) prints the images whose
class differs, the largest logit difference in 2^-F units and whether ``to_torch`` of the
exported graph equals the model; every number should be 0 / True (nn/grid.py).

    PYTHONPATH=src python benchmarks/engine_agreement.py /work/acc_cache/recipe-4_s1_e20_q20.pt
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from bench_accuracy import DEFAULT_DATA  # benchmarks/ is the running script's folder

from potlut import data, models
from potlut.infer import IntEngine, lower
from potlut.nn import QuantSpec, calibrate, convert
from potlut.nn.export import export_graph, to_torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--images", type=int, default=0, help="first N validation images (0: all)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    bundle = data.load(args.data)
    n = args.images or len(bundle.test)
    x = torch.stack([bundle.test[i][0] for i in range(n)])
    for path in args.checkpoints:
        d = torch.load(path, weights_only=False)
        q = convert(models.build("resnet20", bundle.num_classes, bundle.in_channels),
                    QuantSpec(bits=d["bits"], act_signed=d["opts"]["act_signed"]))
        calibrate(q, bundle.calibration_batch())
        q.load_state_dict(d["model"])
        q.eval()
        graph = export_graph(q, bundle.in_shape)
        prog = lower(graph)
        with torch.no_grad():
            fq, rebuilt = q(x).numpy(), to_torch(graph)(x).numpy()
        logits = IntEngine(prog).run(x)
        units = fq * 2.0**prog.frac_bits
        print(f"{path}: {n} images, class differs on "
              f"{np.nonzero(logits.argmax(1) != fq.argmax(1))[0].tolist()}, largest logit "
              f"difference {np.abs(logits - units).max():g} units of 2^-{prog.frac_bits}, "
              f"to_torch equal: {np.array_equal(rebuilt, fq)}", flush=True)


if __name__ == "__main__":
    main()
