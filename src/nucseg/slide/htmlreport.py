"""Self-contained HTML reports of slide runs: ``report.html`` per slide, ``cohort.html`` per
output folder.

One file each, every picture embedded (``data:`` URIs: JPEG for pictures, PNG for matplotlib
plots), no script and no link to fetch, so a report opens with no network and can be mailed.
A slide's report: the thumbnail with its outlines, tissue area, nuclei count and density per
mm^2 of tissue, area and shape distributions, per-type counts when the table has a ``type``
column, the flagged chunks with a picture of each and what was done about them, and the
provenance (weights SHA-256, commit, settings, timings) from ``report.json``.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["flagged_chunks"]


def flagged_chunks(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The chunks of a slide report that raised quality warnings, with their level-0 rectangle.

    Returns
    -------
    list of dict
        ``chunk`` (its name), ``x``, ``y``, ``w``, ``h`` (level-0 pixels, clipped to the slide)
        and ``warnings``, in chunk order.
    """
    chunks = ((report.get("quality") or {}).get("chunks")) or {}
    width, height = report["dimensions"]
    side = report["chunk"] * report["scale"]
    out = []
    for name in sorted(chunks):
        warnings = chunks[name].get("warnings") or []
        match = re.fullmatch(r"r(\d+)_c(\d+)", name)
        if not warnings or match is None:
            continue
        row, col = int(match[1]), int(match[2])
        x, y = round(col * side), round(row * side)
        w, h = min(round(side), width - x), min(round(side), height - y)
        out.append({"chunk": name, "x": x, "y": y, "w": w, "h": h, "warnings": list(warnings)})
    return out
