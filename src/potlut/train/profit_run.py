"""PROFIT during a QAT stage: freeze layers progressively, and survive a resume.

The freezer (:class:`potlut.quant.profit.ProgressiveFreezer`) measures and freezes; this
module ties it to a run folder: its state is written next to the QAT checkpoint after
every epoch, so a resumed run re-freezes the same layers before it continues.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from torch import nn

from potlut.fileio import atomic_write_bytes
from potlut.quant.profit import ProgressiveFreezer
from potlut.train.checkpoint import load_checkpoint

STATE_FILE = "profit.json"


@contextmanager
def progressive_freezing(
    qmodel: nn.Module, epochs: int, folder: Path, checkpoint: Path, resume: bool
) -> Iterator[tuple[ProgressiveFreezer, Callable[[int, Any], None]]]:
    """Attach a freezer to ``qmodel``; yield it and the ``on_epoch_end`` callback for ``fit``."""
    freezer = ProgressiveFreezer(qmodel, epochs)
    state_path = folder / STATE_FILE
    if resume and state_path.is_file():
        freezer.load_state_dict(json.loads(state_path.read_text()))
    if resume and checkpoint.is_file():
        done = len(load_checkpoint(checkpoint)["history"]["epochs"])
        freezer.catch_up(done)  # the state file may lag the checkpoint by one epoch

    def on_epoch_end(epoch: int, log: Any) -> None:
        freezer.on_epoch_end(epoch, log)
        atomic_write_bytes(state_path, json.dumps(freezer.state_dict()).encode())

    freezer.attach()
    try:
        yield freezer, on_epoch_end
    finally:
        freezer.detach()
