"""Training schedules a scheme runs at the end of every QAT epoch (ALQ's bit-width
reduction, SQ's growing quantized ratio, DropBits' bit-width learning).

A scheme registers ``make(qmodel, epochs) -> on_epoch_end(epoch, log)``; ``potlut run`` and
``potlut compare`` chain it with PROFIT's callback (:func:`chain`), so a scheme whose method
is more than fake quantization needs no special case in the training loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

EpochCallback = Callable[[int, Any], None]
_SCHEDULES: dict[str, Callable[[nn.Module, int], EpochCallback]] = {}


def register(name: str, make: Callable[[nn.Module, int], EpochCallback]) -> None:
    """Run ``make(qmodel, epochs)``'s callback after every QAT epoch of scheme ``name``."""
    _SCHEDULES[name] = make


def epoch_callback(name: str, qmodel: nn.Module, epochs: int) -> EpochCallback | None:
    """The scheme's epoch-end callback for this model, or None (plain QAT)."""
    from potlut.quant import registry

    registry.get(name)  # imports the scheme's module, which registers its schedule
    make = _SCHEDULES.get(name)
    return None if make is None else make(qmodel, epochs)


def chain(*callbacks: EpochCallback | None) -> EpochCallback | None:
    """One callback calling every non-None one in order (None if there are none)."""
    cbs = [c for c in callbacks if c is not None]
    if not cbs:
        return None
    if len(cbs) == 1:
        return cbs[0]

    def run_all(epoch: int, log: Any) -> None:
        for c in cbs:
            c(epoch, log)

    return run_all
