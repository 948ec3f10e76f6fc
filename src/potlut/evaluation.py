"""Accuracy of the integer engine on a data set, and the ``int_top1`` hook for reports.

Torch side (it reads a :class:`DataBundle`); the engine itself needs numpy only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from potlut.compress.graph import ModelGraph
from potlut.data.bundle import DataBundle
from potlut.errors import PotlutDataError
from potlut.infer.engine import IntEngine
from potlut.metrics.accuracy import topk_correct


def int_logits(
    engine: IntEngine, data: Dataset, batch_size: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """``(int32 logits [N, classes], labels [N])`` of the engine over ``data``."""
    outs, labels = [], []
    for x, y in DataLoader(data, batch_size=batch_size):
        outs.append(engine.run(x))
        labels.append(np.asarray(y))
    if not outs:
        raise PotlutDataError("the data set has no test images")
    return np.concatenate(outs), np.concatenate(labels)


def evaluate_int(engine: IntEngine, data: Dataset, batch_size: int = 256) -> tuple[float, float]:
    """(Top-1, Top-5) accuracy in percent of the integer engine's logits."""
    logits, labels = int_logits(engine, data, batch_size)
    c1, c5 = topk_correct(torch.from_numpy(logits.astype(np.int64)), torch.from_numpy(labels))
    n = len(labels)
    return 100.0 * c1 / n, 100.0 * c5 / n


def check_bundle(engine: IntEngine, bundle: DataBundle) -> None:
    """One clear error when the data's image shape is not the model's input shape."""
    want = tuple(engine.program.in_shape)
    if tuple(bundle.in_shape) != want:
        raise PotlutDataError(
            f"data set {bundle.name!r} has images of shape {list(bundle.in_shape)}, but the "
            f"model expects {list(want)}")


def int_top1(path_or_graph: str | Path | ModelGraph, bundle: DataBundle,
             backend: str = "auto") -> float:
    """Top-1 (%) of the integer engine on ``bundle.test``: the ``int_top1`` report entry."""
    engine = IntEngine(path_or_graph, backend)
    check_bundle(engine, bundle)
    return evaluate_int(engine, bundle.test)[0]
