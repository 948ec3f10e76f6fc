"""Checkpoints written atomically and read without executing code.

A checkpoint is written to a temporary file in the same folder, flushed, then renamed
over the old one, so a killed run leaves either the previous checkpoint or the new one,
never half of one. Loading uses ``weights_only=True``: no pickled code runs.

:func:`rng_state` / :func:`restore_rng` carry every random generator a run draws from
(torch CPU and CUDA, numpy, Python's ``random``) as tensors and plain values, so a run
resumed after a kill draws the same dropout masks as an uninterrupted one.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
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


def rng_state() -> dict[str, Any]:
    """Every global random generator's state, in a form ``weights_only`` loading accepts."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos,
                  "has_gauss": has_gauss, "gauss": gauss},
        "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64),
                   "gauss_next": gauss_next},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Put back what :func:`rng_state` saved (the inverse; CUDA only where it was saved).

    A checkpoint loaded onto a GPU (``map_location``) brings these tensors there too; the
    generators take their states as CPU byte tensors."""
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].cpu().numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"].tolist()), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
