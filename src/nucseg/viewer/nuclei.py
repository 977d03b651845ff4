"""The nuclei of one slide or image for the viewer: a spatial index, outlines, density.

:class:`NucleiLayer` holds the measurements table (without outlines) and a
:class:`shapely.STRtree` over the nuclei's bounding boxes, so that a viewport's nuclei are found
without scanning the table. Outlines are read on demand: from ``nuclei.parquet``'s ``geometry``
column (WKB, one row group per slide chunk, decoded row groups kept in a small cache), or, for
``nucseg segment`` outputs and slide runs written before that column existed, from the GeoJSON
read once. A viewport's outlines go to the browser simplified to its resolution, in a compact
binary form (:meth:`NucleiLayer.outlines`); a viewport with too many nuclei gets only the count
and the browser shows the density map (:meth:`NucleiLayer.density`) instead.
"""

from __future__ import annotations

import gzip
import json
import logging
import struct
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import shapely

log = logging.getLogger(__name__)

__all__ = ["MAX_OUTLINES", "TYPE_NAMES", "NucleiLayer"]

#: A viewport with more nuclei than this gets their count, not their outlines.
MAX_OUTLINES = 20_000
#: Nucleus types in the order of their codes in :meth:`NucleiLayer.outlines` (255: none/other).
TYPE_NAMES = ("epithelial", "inflammatory", "spindle", "other")
_GROUP_CACHE = 32  # row groups (slide chunks) of WKB bytes kept: about 200 MB at most


class NucleiLayer:
    """A slide's nuclei: measurements, spatial index, outlines on demand.

    Parameters
    ----------
    table : pandas.DataFrame
        One row per nucleus with at least ``id``, ``bbox_x0``, ``bbox_y0``, ``bbox_x1``,
        ``bbox_y1``, ``centroid_x``, ``centroid_y`` (level-0 pixels); other columns are
        measurements shown on a click (``type`` and ``type_prob_*`` when present).
    outlines : callable
        ``outlines(rows) -> array of shapely geometries`` for row positions ``rows``.
    """

    def __init__(self, table: pd.DataFrame, outlines: Any) -> None:
        self.table = table.reset_index(drop=True)
        self._outlines = outlines
        boxes = shapely.box(
            self.table["bbox_x0"].to_numpy(float),
            self.table["bbox_y0"].to_numpy(float),
            self.table["bbox_x1"].to_numpy(float),
            self.table["bbox_y1"].to_numpy(float),
        )
        self.tree = shapely.STRtree(boxes)
        self.types = None
        if "type" in self.table.columns:
            codes = {name: i for i, name in enumerate(TYPE_NAMES)}
            names = self.table["type"].astype(str).str.lower()
            self.types = names.map(codes).fillna(255).to_numpy(np.uint8)

    def __len__(self) -> int:
        return len(self.table)

    @classmethod
    def from_parquet(cls, path: Path, *, geojson: Path | None = None) -> NucleiLayer:
        """The nuclei of a slide run's ``nuclei.parquet`` (outlines from its ``geometry``
        column, else from ``geojson``)."""
        import pyarrow.parquet as pq

        file = pq.ParquetFile(path)
        names = [n for n in file.schema_arrow.names if n != "geometry"]
        table = file.read(columns=names).to_pandas()
        if "geometry" in file.schema_arrow.names:
            return cls(table, _ParquetOutlines(path))
        if geojson is None or not geojson.is_file():
            raise ValueError(f"{path}: no geometry column and no GeoJSON beside it: no outlines")
        log.warning("%s has no outlines (a run before 0.2): reading %s", path, geojson)
        return cls(table, _GeoJSONOutlines(geojson, table["id"].to_numpy()))

    @classmethod
    def from_segment_csv(cls, csv: Path, geojson: Path, *, mpp: float | None) -> NucleiLayer:
        """The nuclei of a ``nucseg segment`` output (``NAME_nuclei.csv`` and its GeoJSON)."""
        raw = pd.read_csv(csv)
        if "label" not in raw.columns:
            raise ValueError(f"{csv}: no 'label' column: not a nucseg segment table")
        ids = raw["label"].to_numpy(np.int64)
        outlines = _GeoJSONOutlines(geojson, ids)
        bounds = shapely.bounds(outlines.geometries).reshape(-1, 4)
        table = pd.DataFrame({"id": ids})
        table["centroid_x"] = raw["centroid_col"] + 0.5  # pixel centres -> corner coordinates
        table["centroid_y"] = raw["centroid_row"] + 0.5
        for i, name in enumerate(("bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1")):
            table[name] = bounds[:, i]
        if mpp is not None and "area" in raw.columns:
            table["area_um2"] = raw["area"] * mpp**2
        for name in raw.columns:
            if name not in ("label", "centroid_row", "centroid_col"):
                table[name if name != "area" else "area_px"] = raw[name]
        return cls(table, outlines)

    def query(self, box: tuple[float, float, float, float]) -> np.ndarray:
        """Row positions (sorted) of the nuclei whose bounding box meets ``box`` = x0, y0, x1,
        y1 in level-0 pixels."""
        rows = self.tree.query(shapely.box(*box))
        return np.sort(rows)

    def outlines(
        self,
        box: tuple[float, float, float, float],
        *,
        tolerance: float = 0.0,
        limit: int = MAX_OUTLINES,
    ) -> bytes:
        """The nuclei meeting ``box``, packed for the browser (little-endian).

        ``uint32 n, uint32 points, uint32 complete`` then, when ``complete`` (n <= ``limit``):
        ``int32 ids[n]``, ``uint8 types[n]`` (255 without types), padding to 4 bytes,
        ``uint32 offsets[n + 1]`` (into the points) and ``float32 xy[2 * points]``: each
        nucleus's exterior ring in level-0 pixels, simplified by ``tolerance`` pixels
        (Douglas-Peucker; drawn, never measured), its closing point left out.
        """
        rows = self.query(box)
        n = len(rows)
        if n > limit:
            return struct.pack("<III", n, 0, 0)
        rings = _exterior_rings(self._outlines(rows))
        if tolerance > 0:  # Douglas-Peucker on the rings; a ring it collapses stays as it was
            simple = shapely.simplify(rings, tolerance, preserve_topology=False)
            collapsed = shapely.get_num_coordinates(simple) < 4
            rings = np.where(collapsed, rings, simple)
        coords, index = shapely.get_coordinates(rings, return_index=True)
        counts = np.bincount(index, minlength=n)
        keep = np.ones(len(coords), dtype=bool)
        ends = np.cumsum(counts)
        keep[ends[counts > 0] - 1] = False  # the closing point repeats the first
        counts = np.maximum(counts - 1, 0)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype("<u4")
        xy = coords[keep].astype("<f4")
        ids = self.table["id"].to_numpy()[rows].astype("<i4")
        types = self.types[rows] if self.types is not None else np.full(n, 255, np.uint8)
        pad = b"\0" * (-n % 4)
        head = struct.pack("<III", n, len(xy), 1)
        return head + ids.tobytes() + types.tobytes() + pad + offsets.tobytes() + xy.tobytes()

    def at(self, x: float, y: float) -> dict[str, Any] | None:
        """The nucleus under level-0 point (x, y): its row of the table, None if none."""
        rows = self.tree.query(shapely.points(x, y), predicate="intersects")
        if not len(rows):
            return None
        rows = np.sort(rows)
        shapes = self._outlines(rows)
        inside = shapely.covers(shapes, shapely.points(x, y))
        if not inside.any():
            return None
        row = int(rows[np.flatnonzero(inside)[0]])
        return {name: _plain(self.table[name].iat[row]) for name in self.table.columns}

    def density(self, shape: tuple[int, int], *, cell: float) -> np.ndarray:
        """Nuclei per cell of ``cell`` level-0 pixels over a slide of ``shape`` = (rows, cols):
        a ``(ceil(rows / cell), ceil(cols / cell))`` int64 array of centroid counts."""
        n_rows, n_cols = int(np.ceil(shape[0] / cell)), int(np.ceil(shape[1] / cell))
        r = np.clip((self.table["centroid_y"].to_numpy() // cell).astype(np.int64), 0, n_rows - 1)
        c = np.clip((self.table["centroid_x"].to_numpy() // cell).astype(np.int64), 0, n_cols - 1)
        counts = np.bincount(r * n_cols + c, minlength=n_rows * n_cols)
        return counts.reshape(n_rows, n_cols)


def _exterior_rings(shapes: np.ndarray) -> np.ndarray:
    """The exterior ring of each polygon; of a multipolygon, its largest part's."""
    multi = shapely.get_type_id(shapes) == 6
    if multi.any():
        shapes = shapes.copy()
        for i in np.flatnonzero(multi):
            parts = shapely.get_parts(shapes[i])
            shapes[i] = parts[int(np.argmax(shapely.area(parts)))]
    return shapely.get_exterior_ring(shapes)


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


class _ParquetOutlines:
    """Outlines read from ``nuclei.parquet``'s WKB ``geometry`` column: a row group's bytes are
    read once (kept in a small cache, undecoded) and only the rows asked for are decoded."""

    def __init__(self, path: Path) -> None:
        import pyarrow.parquet as pq

        self.file = pq.ParquetFile(path)
        sizes = [self.file.metadata.row_group(g).num_rows for g in range(self.file.num_row_groups)]
        self.starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.cache: OrderedDict[int, Any] = OrderedDict()
        self.lock = threading.Lock()

    def group(self, g: int) -> Any:
        """Row group ``g``'s WKB column (a pyarrow array)."""
        with self.lock:
            if g in self.cache:
                self.cache.move_to_end(g)
                return self.cache[g]
            column = self.file.read_row_group(g, columns=["geometry"])["geometry"]
            self.cache[g] = column
            if len(self.cache) > _GROUP_CACHE:
                self.cache.popitem(last=False)
            return column

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty(len(rows), dtype=object)
        groups = np.searchsorted(self.starts, rows, side="right") - 1
        for g in np.unique(groups):
            pick = groups == g
            wkb = self.group(int(g)).take(rows[pick] - self.starts[g])
            out[pick] = shapely.from_wkb(wkb.to_numpy(zero_copy_only=False))
        return out


class _GeoJSONOutlines:
    """Outlines read once from a GeoJSON FeatureCollection, matched to ``ids`` by the
    ``measurements`` ``id`` (slide runs) or ``label`` (``nucseg segment``)."""

    def __init__(self, path: Path, ids: np.ndarray) -> None:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as fh:
            features = json.load(fh)["features"]
        by_id = {}
        for feature in features:
            measurements = feature.get("properties", {}).get("measurements", {})
            key = measurements.get("id", measurements.get("label"))
            by_id[int(key)] = json.dumps(feature["geometry"])
        missing = [int(i) for i in ids if int(i) not in by_id]
        if missing:
            raise ValueError(f"{path}: no outline for nucleus {missing[0]} of the table")
        self.geometries = shapely.from_geojson([by_id[int(i)] for i in ids])

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        return self.geometries[rows]
