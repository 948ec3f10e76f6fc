"""Checkpoints written atomically and read without executing code.

A checkpoint is written to a temporary file in the same folder, flushed, then renamed
over the old one, so a killed run leaves either the previous checkpoint or the new one,
never half of one. Loading uses ``weights_only=True``: no pickled code runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from potlut.errors import PotlutCheckpointError
from potlut.fileio import atomic_write_bytes


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Atomically save a dict of tensors / plain values with ``torch.save``."""
    import io

    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint saved by :func:`save_checkpoint`; any failure is a user error."""
    path = Path(path)
    if not path.is_file():
        raise PotlutCheckpointError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt files
        msg = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise PotlutCheckpointError(
            f"{path}: unreadable checkpoint ({msg}); delete it or start without --resume"
        ) from None
    if not isinstance(state, dict) or "model" not in state:
        raise PotlutCheckpointError(f"{path}: not a potlut checkpoint (no model state)")
    return state
