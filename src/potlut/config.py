"""Experiment config files (TOML): top-level keys are :class:`RunConfig` fields.

Tables other than the run fields (e.g. ``[compare]``) are returned separately so each
command reads its own section. Unknown top-level keys are an error, so a typo in a
config never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

from potlut.errors import PotlutConfigError
from potlut.pipeline import RunConfig


def load_config(
    path: str | Path, overrides: dict[str, Any] | None = None
) -> tuple[RunConfig, dict[str, Any]]:
    """Read ``path`` into a RunConfig (with ``overrides`` applied) plus its extra tables."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise PotlutConfigError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PotlutConfigError(f"{path}: not a valid TOML config ({exc})") from None
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    run_keys = {k: v for k, v in raw.items() if not isinstance(v, dict)}
    sections = {k: v for k, v in raw.items() if isinstance(v, dict)}
    values = {**run_keys, **{k: v for k, v in (overrides or {}).items() if v is not None}}
    unknown = set(values) - fields
    if unknown:
        raise PotlutConfigError(
            f"{path}: unknown keys {sorted(unknown)}; known: {', '.join(sorted(fields))}"
        )
    return RunConfig(**values), sections
