"""The one report writer: Markdown tables and the JSON / CSV / Markdown files of a job.

``potlut run`` (report.{json,md}), ``potlut compare`` (compare.{json,csv,md}) and
``potlut report`` (report/report.md) all write through here, each file atomically.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from potlut.fileio import atomic_write_bytes


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> list[str]:
    """Markdown table lines; ``align`` has one letter per column: ``l`` left, ``r`` right."""
    assert len(align) == len(header), (align, header)
    rule = "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"
    return ["| " + " | ".join(header) + " |", rule,
            *("| " + " | ".join(str(c) for c in r) + " |" for r in rows)]


def write_report(out: Path, stem: str, *, data: dict[str, Any] | None = None,
                 markdown: Sequence[str] | None = None, csv_rows: Sequence[dict] | None = None,
                 csv_keys: Sequence[str] = ()) -> list[Path]:
    """Write ``out/stem.json`` (``data``), ``stem.csv`` and ``stem.md`` (lines) where given;
    return the paths written."""
    written = []
    if data is not None:
        atomic_write_bytes(out / f"{stem}.json", json.dumps(data, indent=2).encode())
        written.append(out / f"{stem}.json")
    if csv_rows is not None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(csv_keys), extrasaction="ignore")
        w.writeheader()
        w.writerows(csv_rows)
        atomic_write_bytes(out / f"{stem}.csv", buf.getvalue().encode())
        written.append(out / f"{stem}.csv")
    if markdown is not None:
        atomic_write_bytes(out / f"{stem}.md", "\n".join(markdown).encode())
        written.append(out / f"{stem}.md")
    return written
