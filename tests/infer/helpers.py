"""Random quantized models for the engine tests: converted, calibrated, random BatchNorm."""

from __future__ import annotations

import copy
from functools import lru_cache

import torch
from torch import nn

from potlut import models
from potlut.compress.graph import ModelGraph
from potlut.nn import QuantSpec, calibrate, convert
from potlut.nn.export import export_graph


def random_qmodel(name: str, in_shape: tuple[int, int, int], bits: int, seed: int = 0,
                  **spec) -> nn.Module:
    """A converted + calibrated model whose BatchNorms have random (also negative) scales."""
    torch.manual_seed(seed)
    q = convert(models.build(name, 10, in_shape[0]), QuantSpec(bits=bits, **spec))
    calibrate(q, torch.randn(16, *in_shape))
    with torch.no_grad():
        for m in q.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(-1.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.2, 3.0)
    torch.set_num_threads(1)  # numba's parallel quantizer kernels reset it (shared OpenMP)
    return q.eval()


@lru_cache(maxsize=16)
def _graph(name: str, in_shape: tuple[int, int, int], bits: int, seed: int,
           spec: tuple) -> ModelGraph:
    return export_graph(random_qmodel(name, in_shape, bits, seed, **dict(spec)), in_shape)


def random_graph(name: str, in_shape: tuple[int, int, int], bits: int, seed: int = 0,
                 **spec) -> ModelGraph:
    """:func:`random_qmodel` exported (cached per arguments within a test session).

    Each call gets its own deep copy, so a test that changes the graph cannot change
    what a later test sees (no dependence on test order).
    """
    return copy.deepcopy(_graph(name, tuple(in_shape), bits, seed, tuple(sorted(spec.items()))))
