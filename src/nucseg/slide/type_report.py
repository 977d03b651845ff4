"""Per-type counts and densities of a slide for its report, ``slides.csv`` and the cohort.

Read from the slide's ``nuclei.parquet`` (only three columns); absent for a model without a type
head, whose outputs carry no type (see docs/types.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from nucseg.nucleus_types import TYPE_NAMES, densities

#: The ``slides.csv`` columns a typed run adds after the others.
TYPE_SUMMARY_COLUMNS = (
    *(f"n_{n}" for n in TYPE_NAMES),
    *(f"{n}_per_mm2" for n in TYPE_NAMES),
    "tumour_region_mm2",
    "inflammatory_per_mm2_tumour",
)


def slide_types(parquet: str | Path, *, tissue_mm2: float) -> dict[str, Any] | None:
    """:func:`nucseg.nucleus_types.densities` of the nuclei in ``parquet``; None if untyped."""
    import pyarrow.parquet as pq

    if "type" not in pq.read_schema(parquet).names:
        return None
    table = pq.read_table(parquet, columns=["type", "centroid_x_um", "centroid_y_um"])
    return densities(
        table["type"].to_numpy(zero_copy_only=False),
        table["centroid_x_um"].to_numpy(),
        table["centroid_y_um"].to_numpy(),
        tissue_mm2=tissue_mm2,
    )


def summary_row(report: Mapping[str, Any]) -> dict[str, Any]:
    """The type columns of a slide's ``slides.csv`` row (none for an untyped run)."""
    types = report.get("types")
    if not types:
        return {}
    row: dict[str, Any] = {f"n_{n}": c for n, c in types["counts"].items()}
    for n, d in types["per_mm2_tissue"].items():
        row[f"{n}_per_mm2"] = None if d is None else round(d, 1)
    region = types["tumour_region"]
    row["tumour_region_mm2"] = round(region["area_mm2"], 4)
    dense = region["inflammatory_per_mm2"]
    row["inflammatory_per_mm2_tumour"] = None if dense is None else round(dense, 1)
    return row


def summary_columns(base: Iterable[str], rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """``base``, then :data:`TYPE_SUMMARY_COLUMNS` if any row has them."""
    rows = list(rows)
    typed = any(row.get("tumour_region_mm2") not in (None, "") for row in rows)
    return [*base, *(TYPE_SUMMARY_COLUMNS if typed else ())]
