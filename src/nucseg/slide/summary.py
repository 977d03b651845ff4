"""``slides.csv`` and the table printed at the end of ``nucseg slide``: one row per slide, for the
single-process and the Dask runs alike."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

SUMMARY_COLUMNS = (
    "slide", "status", "nuclei", "tissue_mm2", "nuclei_per_mm2", "minutes", "chunk_seconds", "error"
)  # fmt: skip


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as a plain-text table: slide, nuclei, tissue, minutes, status."""
    header = ("slide", "nuclei", "tissue mm2", "minutes", "status")
    lines = [[Path(r["slide"]).name, str(r.get("nuclei", "")), str(r.get("tissue_mm2", "")),
              str(r.get("minutes", "")), r["status"]] for r in rows]  # fmt: skip
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    out += ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines]
    return "\n".join(out)


def write_summary(path: Path, rows: list[dict[str, Any]]) -> None:
    """Update ``slides.csv``: this run's rows replace earlier rows of the same slides."""
    from nucseg.io import atomic_write

    old = []
    if path.is_file():
        with open(path, newline="") as fh:
            old = [r for r in csv.DictReader(fh) if r["slide"] not in {x["slide"] for x in rows}]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=SUMMARY_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(old + rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, overwrite=True) as tmp:
        Path(tmp).write_text(buffer.getvalue())
