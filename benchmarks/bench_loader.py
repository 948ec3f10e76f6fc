"""Can the augmentation keep up with training? Loader time per batch / train-step time.

Measured side by side in one run on this machine (one intra-op thread for both):
- CIFAR: a batch of 128 32x32 images through random crop + flip + normalize (one process,
  no workers) vs one FP32 ResNet20 training step on that batch;
- ImageNet-style: a batch of 32 JPEGs (375x500) decoded by Pillow and random-resized-cropped
  to 224 vs one FP32 ResNet18 training step on that batch.
A ratio below 1 means a single DataLoader worker already feeds the model; with W workers
the loader side is divided by W.

    python benchmarks/bench_loader.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from potlut import data, models  # noqa: E402
from tests.data.fixtures import write_cifar10, write_image  # noqa: E402


def loader_seconds(ds, batch: int, reps: int) -> float:
    best = float("inf")
    for r in range(reps):
        ds.set_epoch(r)
        t = time.perf_counter()
        torch.stack([ds[i][0] for i in range(batch)])
        best = min(best, time.perf_counter() - t)
    return best


def step_seconds(model: nn.Module, x: torch.Tensor, reps: int) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    y = torch.zeros(len(x), dtype=torch.long)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cifar = data.load(f"cifar10:{write_cifar10(root, per_batch=128, n_test=8)}")
        t_load = loader_seconds(cifar.train, 128, 5)
        t_step = step_seconds(models.build("resnet20", 10, 3), torch.randn(128, 3, 32, 32), 3)
        print(f"CIFAR batch 128: augmentation {t_load * 1e3:.1f} ms, ResNet20 step "
              f"{t_step * 1e3:.1f} ms, ratio {t_load / t_step:.3f}")
        folder, rng = root / "img", np.random.default_rng(0)
        for split, n in (("train", 16), ("val", 1)):
            for c in ("a", "b"):
                for j in range(n):  # JPEG files of a typical ImageNet size
                    write_image(folder / split / c / f"{j}.jpg", rng, 375, 500)
        imgs = data.load(f"folder:{folder}?size=224")
        t_load = loader_seconds(imgs.train, 32, 3)
        t_step = step_seconds(models.build("resnet18", 1000, 3), torch.randn(32, 3, 224, 224), 2)
        print(f"224 batch 32: JPEG decode + random-resized crop {t_load * 1e3:.0f} ms, "
              f"ResNet18 step {t_step * 1e3:.0f} ms, ratio {t_load / t_step:.3f}")


if __name__ == "__main__":
    main()
