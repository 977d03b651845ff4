"""``OUT/slides.csv``: one row per slide, rebuilt from what is on disk and written atomically."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

from nucseg.slide.type_report import summary_columns
from nucseg.slide.type_report import summary_row as type_columns

__all__ = [
    "SUMMARY_COLUMNS", "exit_status", "failed_row", "summary_row", "table", "write_summary"
]  # fmt: skip

SUMMARY_COLUMNS = (
    "slide", "status", "nuclei", "tissue_mm2", "nuclei_per_mm2", "minutes", "chunk_seconds",
    "error", "flags",
)  # fmt: skip


def summary_row(path: str | os.PathLike, report: dict[str, Any]) -> dict[str, Any]:
    """The ``slides.csv`` row of a finished slide, from its report."""
    quality = report.get("quality") or {}
    flags = list(quality.get("slide_flags", []))
    flags += [f"{kind} ({len(names)} chunks)" for kind, names in quality.get("flags", {}).items()]
    return {
        "slide": str(path), "status": "ok", "error": "",
        "nuclei": report["nuclei"],
        "tissue_mm2": round(report["tissue_mm2"], 4),
        "nuclei_per_mm2": round(report["nuclei_per_mm2"] or 0.0, 1),
        "minutes": round(report["seconds"] / 60, 2),
        "chunk_seconds": round(report.get("chunk_seconds") or report["times"]["chunks_s"], 2),
        "flags": "; ".join(flags),
        **type_columns(report),
    }  # fmt: skip


def failed_row(
    path: str | os.PathLike, message: str, err: BaseException | None, out: str | os.PathLike
) -> dict[str, Any]:
    """The row of a slide that failed. A refusal to replace a finished slide's outputs
    (:class:`nucseg.slide.run.OutputsExist`) changes nothing on disk, so the row is the finished
    slide's own, rebuilt from its ``report.json``."""
    from nucseg.slide.run import OutputsExist, slide_stem

    if isinstance(err, OutputsExist):
        report = Path(out) / slide_stem(path) / "report.json"
        try:
            return {**summary_row(path, json.loads(report.read_text())), "refused": message}
        except (OSError, ValueError, KeyError, TypeError):
            pass  # no readable report: not finished
    return {"slide": str(path), "status": "failed", "error": message}


def exit_status(rows: list[dict[str, Any]]) -> int:
    """0 if every slide finished in this run, else 2 (a failure, or a refused rerun)."""
    return 2 if any(r["status"] != "ok" or r.get("refused") for r in rows) else 0


def table(rows: list[dict[str, Any]]) -> str:
    """The summary printed at the end of a run (a refused rerun's slide shows ``ok, kept``)."""
    header = ("slide", "nuclei", "tissue mm2", "minutes", "status")
    lines = [[Path(r["slide"]).name, str(r.get("nuclei", "")), str(r.get("tissue_mm2", "")),
              str(r.get("minutes", "")), r["status"] + ", kept" * bool(r.get("refused"))]
             for r in rows]  # fmt: skip
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    out += ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines]
    return "\n".join(out)


def write_summary(path: Path, rows: list[dict[str, Any]]) -> None:
    """Update ``slides.csv``: this run's rows replace earlier rows of the same slides (a finished
    slide whose rerun was refused keeps its row, rebuilt from its report by :func:`failed_row`);
    the file is replaced atomically."""
    from nucseg.atomic import atomic_write

    old = []
    if path.is_file():
        with open(path, newline="") as fh:
            old = [r for r in csv.DictReader(fh) if r["slide"] not in {x["slide"] for x in rows}]
    buffer = io.StringIO()
    fields = summary_columns(SUMMARY_COLUMNS, old + rows)  # the type columns of a typed run
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(old + rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, overwrite=True) as tmp:
        Path(tmp).write_text(buffer.getvalue())


def write_cohort_report(out: Path) -> None:
    """``OUT/cohort.html`` over the slide folders of ``out`` (a failure: one warning line)."""
    import sys

    from nucseg.slide.htmlreport import write_cohort_report as write

    try:
        write(out)
    except (OSError, ValueError, KeyError) as err:
        print(f"nucseg: warning: {out / 'cohort.html'} not written: {err}", file=sys.stderr)
