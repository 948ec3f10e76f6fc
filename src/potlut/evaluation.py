"""Accuracy of the integer engine on a data set: the one integer-accuracy helper.

``data`` is a torch ``Dataset`` of ``(image, label)`` (a :class:`DataBundle` split) or a
pair of numpy arrays ``(images [N, C, H, W], labels [N])``, so a .potlut file can be
scored without torch (``potlut infer --data npz:FILE``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from potlut.compress.graph import ModelGraph
from potlut.errors import PotlutDataError
from potlut.infer.engine import IntEngine


def _batches(data: Any, batch_size: int) -> Iterator[tuple[Any, np.ndarray]]:
    if isinstance(data, tuple):
        x, y = data
        for i in range(0, len(y), batch_size):
            yield x[i:i + batch_size], np.asarray(y[i:i + batch_size])
        return
    from torch.utils.data import DataLoader

    for x, y in DataLoader(data, batch_size=batch_size):
        yield x, np.asarray(y)


def int_logits(engine: IntEngine, data: Any, batch_size: int = 256
               ) -> tuple[np.ndarray, np.ndarray]:
    """``(int32 logits [N, classes], labels [N])`` of the engine over ``data``."""
    outs, labels = [], []
    for x, y in _batches(data, batch_size):
        outs.append(engine.run(x))
        labels.append(y)
    if not outs:
        raise PotlutDataError("the data set has no test images")
    return np.concatenate(outs), np.concatenate(labels)


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, ks=(1, 5)) -> list[float]:
    """Percent of rows whose label is among the ``k`` largest logits (ties: lower index)."""
    order = np.argsort(-logits.astype(np.int64), axis=1, kind="stable")
    hit = order[:, :max(ks)] == np.asarray(labels)[:, None]
    return [100.0 * float(hit[:, :k].any(axis=1).mean()) for k in ks]


def evaluate_int(engine: IntEngine, data: Any, batch_size: int = 256) -> tuple[float, float]:
    """(Top-1, Top-5) accuracy in percent of the integer engine's logits."""
    top1, top5 = topk_accuracy(*int_logits(engine, data, batch_size))
    return top1, top5


def check_shape(engine: IntEngine, name: str, in_shape: tuple[int, ...]) -> None:
    """One clear error when the data's image shape is not the model's input shape."""
    want = tuple(engine.program.in_shape)
    if tuple(in_shape) != want:
        raise PotlutDataError(
            f"data set {name!r} has images of shape {list(in_shape)}, but the "
            f"model expects {list(want)}")


def check_bundle(engine: IntEngine, bundle: Any) -> None:
    """:func:`check_shape` for a :class:`potlut.data.DataBundle`."""
    check_shape(engine, bundle.name, bundle.in_shape)


def load_arrays(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Test images and labels from an ``.npz`` file with arrays ``x`` [N, C, H, W] and ``y``.

    The images are what the model was trained on (already normalized); no torch needed.
    """
    try:
        with np.load(path, allow_pickle=False) as f:
            x, y = np.asarray(f["x"]), np.asarray(f["y"])
    except FileNotFoundError:
        raise PotlutDataError(f"{path}: no such file") from None
    except KeyError as exc:
        raise PotlutDataError(f"{path}: needs arrays 'x' and 'y' (missing {exc})") from None
    except (OSError, ValueError) as exc:
        raise PotlutDataError(f"{path}: not a readable .npz file ({exc})") from None
    if x.ndim != 4 or x.dtype.kind != "f" or y.ndim != 1 or y.dtype.kind not in "iu":
        raise PotlutDataError(f"{path}: 'x' must be float [N, C, H, W] and 'y' integer [N], "
                              f"got {x.dtype} {list(x.shape)} and {y.dtype} {list(y.shape)}")
    if len(x) != len(y):
        raise PotlutDataError(f"{path}: {len(x)} images but {len(y)} labels")
    return x, y


def int_top1(path_or_graph: str | Path | ModelGraph, bundle: Any,
             backend: str = "auto") -> float:
    """Top-1 (%) of the integer engine on ``bundle.test``: the ``int_top1`` report entry."""
    engine = IntEngine(path_or_graph, backend)
    check_bundle(engine, bundle)
    return evaluate_int(engine, bundle.test)[0]
