"""QAT step time of IOS-PoT as a ratio to the FP32 step, ResNet20, batch 128, measured in one run.

    python benchmarks/bench_qat.py [--steps 10] [--bits 4] [--threads N] [--brevitas]

Each step is forward + backward + SGD update on a random CIFAR-shaped batch. The three
models (FP32, IOS-PoT, and Brevitas 4-bit QAT if installed) are timed round-robin so that
machine load affects them alike; the median step time of each is reported, and the ratios
are what matter.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from potlut.models import build
from potlut.nn import QuantSpec, calibrate, convert
from potlut.train.losses import DistributionLoss


def step_fn(model: nn.Module, dist: DistributionLoss | None, x, y):
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    ce = nn.CrossEntropyLoss()

    def step() -> None:
        loss = ce(model(x), y)
        if dist is not None:
            loss = loss + dist(model)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def brevitas_resnet20(bits: int) -> nn.Module | None:
    """ResNet20 with Brevitas QuantConv2d/QuantLinear/QuantReLU at ``bits`` (None if absent)."""
    try:
        import brevitas.nn as qnn
    except ImportError:
        return None
    model = build("resnet20", 10, 3)

    def swap(mod: nn.Module) -> None:
        for name, child in mod.named_children():
            if isinstance(child, nn.Conv2d):
                setattr(mod, name, qnn.QuantConv2d(
                    child.in_channels, child.out_channels, child.kernel_size, child.stride,
                    child.padding, bias=child.bias is not None, weight_bit_width=bits))
            elif isinstance(child, nn.Linear):
                setattr(mod, name, qnn.QuantLinear(
                    child.in_features, child.out_features, bias=True, weight_bit_width=bits))
            elif isinstance(child, nn.ReLU):
                setattr(mod, name, qnn.QuantReLU(bit_width=bits))
            else:
                swap(child)

    swap(model)
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    ap.add_argument("--no-brevitas", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, 32, 32)
    y = torch.randint(0, 10, (args.batch,))
    fp32 = build("resnet20", 10, 3)
    qmodel = convert(fp32, QuantSpec(bits=args.bits))
    calibrate(qmodel, x)
    steps = {
        "PyTorch FP32": step_fn(fp32.train(), None, x, y),
        f"potlut IOS-PoT {args.bits}-bit": step_fn(qmodel.train(), DistributionLoss(), x, y),
    }
    brev = None if args.no_brevitas else brevitas_resnet20(args.bits)
    if brev is not None:
        steps[f"Brevitas {args.bits}-bit"] = step_fn(brev.train(), None, x, y)
    times: dict[str, list[float]] = {k: [] for k in steps}
    for i in range(args.warmup + args.steps):
        for name, step in steps.items():
            t = time.perf_counter()
            step()
            if i >= args.warmup:
                times[name].append(time.perf_counter() - t)
    base = statistics.median(times["PyTorch FP32"])
    print(f"ResNet20, batch {args.batch}, {torch.get_num_threads()} threads, "
          f"median of {args.steps} steps (torch {torch.__version__})")
    print(f"{'method':28s} {'step (ms)':>10s} {'x FP32':>8s}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:28s} {1000 * med:10.1f} {med / base:8.2f}")
    if brev is None and not args.no_brevitas:
        print("(Brevitas not installed: pip install brevitas to add its row)")


if __name__ == "__main__":
    main()
