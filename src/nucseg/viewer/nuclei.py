"""The nuclei of one slide or image for the viewer: a spatial index, outlines, density.

:class:`NucleiLayer` holds the measurements table (without outlines) and a
:class:`shapely.STRtree` over the nuclei's bounding boxes, so that a viewport's nuclei are found
without scanning the table. Outlines are read on demand: from ``nuclei.parquet``'s ``geometry``
column (WKB, one row group per slide chunk, decoded into flat arrays of ring points kept in a
cache of :data:`RING_CACHE_BYTES`, filled in the background after start), or, for
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
#: Decoded outlines kept in memory (float32 points); about 1 M nuclei of 40 points.
RING_CACHE_BYTES = 384 * 2**20


class NucleiLayer:
    """A slide's nuclei: measurements, spatial index, outlines on demand.

    Parameters
    ----------
    table : pandas.DataFrame
        One row per nucleus with at least ``id``, ``bbox_x0``, ``bbox_y0``, ``bbox_x1``,
        ``bbox_y1``, ``centroid_x``, ``centroid_y`` (level-0 pixels); other columns are
        measurements shown on a click (``type`` and ``type_prob_*`` when present).
    outlines : callable
        ``outlines(rows) -> (xy, starts)``: the exterior rings of the nuclei at row positions
        ``rows`` (see :func:`rings_of`), with a ``prefetch()`` method (:class:`_RingCache`).
    """

    def __init__(self, table: pd.DataFrame, outlines: Any) -> None:
        self.table = table.reset_index(drop=True)
        self._rings = outlines
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
            return cls(table, parquet_rings(path))
        if geojson is None or not geojson.is_file():
            raise ValueError(f"{path}: no geometry column and no GeoJSON beside it: no outlines")
        log.warning("%s has no outlines (a run before 0.2): reading %s", path, geojson)
        return cls(table, geojson_rings(geojson, table["id"].to_numpy())[0])

    @classmethod
    def from_segment_csv(cls, csv: Path, geojson: Path, *, mpp: float | None) -> NucleiLayer:
        """The nuclei of a ``nucseg segment`` output (``NAME_nuclei.csv`` and its GeoJSON)."""
        raw = pd.read_csv(csv)
        if "label" not in raw.columns:
            raise ValueError(f"{csv}: no 'label' column: not a nucseg segment table")
        ids = raw["label"].to_numpy(np.int64)
        outlines, shapes = geojson_rings(geojson, ids)
        bounds = shapely.bounds(shapes).reshape(-1, 4)
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
        nucleus's exterior ring in level-0 pixels without its closing point, thinned to the
        screen (:func:`thin`) with ``tolerance`` level-0 pixels per screen pixel.
        """
        rows = self.query(box)
        n = len(rows)
        if n > limit:
            return struct.pack("<III", n, 0, 0)
        xy, starts = self._rings(rows)
        if tolerance > 0:
            xy, starts = thin(xy, starts, tolerance)
        ids = self.table["id"].to_numpy()[rows].astype("<i4")
        types = self.types[rows] if self.types is not None else np.full(n, 255, np.uint8)
        pad = b"\0" * (-n % 4)
        head = struct.pack("<III", n, len(xy), 1)
        offsets = starts.astype("<u4").tobytes()
        return head + ids.tobytes() + types.tobytes() + pad + offsets + xy.astype("<f4").tobytes()

    def at(self, x: float, y: float) -> dict[str, Any] | None:
        """The nucleus under level-0 point (x, y): its row of the table, None if none."""
        rows = self.tree.query(shapely.points(x, y), predicate="intersects")
        if not len(rows):
            return None
        rows = np.sort(rows)
        xy, starts = self._rings(rows)
        shapes = shapely.polygons(shapely.linearrings(xy, indices=np.repeat(
            np.arange(len(rows)), np.diff(starts))))  # fmt: skip
        inside = shapely.covers(shapes, shapely.points(x, y))
        if not inside.any():
            return None
        row = int(rows[np.flatnonzero(inside)[0]])
        return {name: _plain(self.table[name].iat[row]) for name in self.table.columns}

    def prefetch(self) -> None:
        """Read and decode outlines into the cache, group after group, until it is full (run in
        a background thread after start: later views find their outlines decoded)."""
        self._rings.prefetch()

    def density(self, shape: tuple[int, int], *, cell: float) -> np.ndarray:
        """Nuclei per cell of ``cell`` level-0 pixels over a slide of ``shape`` = (rows, cols):
        a ``(ceil(rows / cell), ceil(cols / cell))`` int64 array of centroid counts."""
        n_rows, n_cols = int(np.ceil(shape[0] / cell)), int(np.ceil(shape[1] / cell))
        r = np.clip((self.table["centroid_y"].to_numpy() // cell).astype(np.int64), 0, n_rows - 1)
        c = np.clip((self.table["centroid_x"].to_numpy() // cell).astype(np.int64), 0, n_cols - 1)
        counts = np.bincount(r * n_cols + c, minlength=n_rows * n_cols)
        return counts.reshape(n_rows, n_cols)


def thin(xy: np.ndarray, starts: np.ndarray, tolerance: float) -> tuple[np.ndarray, np.ndarray]:
    """Drop each ring's points that fall in the same ``tolerance``-sized grid cell as the point
    before (the radial-distance pass of polyline simplifiers, on a grid); a ring left with fewer
    than 3 points keeps all of its points.

    Parameters
    ----------
    xy : (P, 2) float array
        The rings' points, ring after ring.
    starts : (n + 1,) int array
        Where each ring starts in ``xy`` (and the end).

    Returns
    -------
    xy, starts
        The points kept and the new starts.
    """
    lengths = np.diff(starts)
    if not len(xy):
        return xy, starts
    cell = np.floor(xy / np.float32(tolerance)).astype(np.int64)
    code = cell[:, 0] * (1 << 32) + cell[:, 1]  # one number per grid cell
    keep = np.empty(len(xy), dtype=bool)
    keep[0] = True
    np.not_equal(code[1:], code[:-1], out=keep[1:])
    firsts = starts[:-1][lengths > 0]
    keep[firsts] = True  # every ring's first point
    kept = np.zeros(len(lengths), dtype=np.int64)
    kept[lengths > 0] = np.add.reduceat(keep, firsts)
    small = kept < 3
    if small.any():
        keep |= np.repeat(small, lengths)
        kept[small] = lengths[small]
    return xy[keep], np.concatenate([[0], np.cumsum(kept)]).astype(np.int64)


def rings_of(shapes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exterior rings of polygons (of a multipolygon, its largest part's), without their
    closing points: ``(xy (P, 2) float32, starts (n + 1,) int64)``."""
    multi = shapely.get_type_id(shapes) == 6
    if multi.any():
        shapes = shapes.copy()
        for i in np.flatnonzero(multi):
            parts = shapely.get_parts(shapes[i])
            shapes[i] = parts[int(np.argmax(shapely.area(parts)))]
    coords, index = shapely.get_coordinates(shapely.get_exterior_ring(shapes), return_index=True)
    counts = np.bincount(index, minlength=len(shapes))
    keep = np.ones(len(coords), dtype=bool)
    keep[np.cumsum(counts)[counts > 0] - 1] = False  # the closing point repeats the first
    counts = np.maximum(counts - 1, 0)
    return coords[keep].astype(np.float32), np.concatenate([[0], np.cumsum(counts)]).astype(
        np.int64
    )


def gather(xy: np.ndarray, starts: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rings ``rows`` of a ``(xy, starts)`` store, packed the same way."""
    lengths = starts[rows + 1] - starts[rows]
    out_starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    index = np.repeat(starts[rows] - out_starts[:-1], lengths) + np.arange(out_starts[-1])
    points = np.ascontiguousarray(xy, dtype=np.float32).view(np.int64).ravel()  # a point a number
    return points.take(index).view(np.float32).reshape(-1, 2), out_starts


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


class _RingCache:
    """Rings of groups of rows, least recently used dropped past ``budget`` bytes.

    ``load(g, local=None) -> (xy, starts)`` reads group ``g``'s rings (only the rows ``local``
    when given). A view decodes only its own rows of a group not in the cache; whole groups are
    decoded and kept by :meth:`prefetch` (and :meth:`group`).
    """

    def __init__(self, starts: np.ndarray, load: Any, *, budget: int = RING_CACHE_BYTES) -> None:
        self.starts, self.load, self.budget = starts, load, budget
        self.cache: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self.lock = threading.Lock()

    def _bytes(self) -> int:
        return sum(xy.nbytes + st.nbytes for xy, st in self.cache.values())

    def group(self, g: int) -> tuple[np.ndarray, np.ndarray]:
        with self.lock:
            if g in self.cache:
                self.cache.move_to_end(g)
                return self.cache[g]
        rings = self.load(g)  # outside the lock: a prefetch does not hold up a view
        with self.lock:
            self.cache[g] = rings
            while len(self.cache) > 1 and self._bytes() > self.budget:
                self.cache.popitem(last=False)
        return rings

    def prefetch(self) -> None:
        for g in range(len(self.starts) - 1):
            with self.lock:
                if g in self.cache:
                    continue
                if self._bytes() > 0.8 * self.budget:
                    return
            self.group(g)

    def _part(self, g: int, local: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with self.lock:
            cached = self.cache.get(g)
            if cached is not None:
                self.cache.move_to_end(g)
        return gather(*cached, local) if cached is not None else self.load(g, local)

    def __call__(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        groups = np.searchsorted(self.starts, rows, side="right") - 1
        parts = [self._part(int(g), rows[groups == g] - self.starts[g]) for g in np.unique(groups)]
        if not parts:
            return np.empty((0, 2), np.float32), np.zeros(1, np.int64)
        xy = np.concatenate([p[0] for p in parts])
        lengths = np.concatenate([np.diff(p[1]) for p in parts])
        return xy, np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


def parquet_rings(path: Path) -> _RingCache:
    """Rings read from ``nuclei.parquet``'s WKB ``geometry`` column, one row group (one slide
    chunk) at a time."""
    import pyarrow.parquet as pq

    file = pq.ParquetFile(path)
    sizes = [file.metadata.row_group(g).num_rows for g in range(file.num_row_groups)]
    lock = threading.Lock()

    def load(g: int, local: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        with lock:  # one reader of the file at a time
            column = file.read_row_group(g, columns=["geometry"])["geometry"]
        if local is not None:
            column = column.take(local)
        return rings_of(shapely.from_wkb(column.to_numpy(zero_copy_only=False)))

    return _RingCache(np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64), load)


def geojson_rings(path: Path, ids: np.ndarray) -> tuple[_RingCache, np.ndarray]:
    """Rings read once from a GeoJSON FeatureCollection, matched to ``ids`` by the
    ``measurements`` ``id`` (slide runs) or ``label`` (``nucseg segment``); and the shapes."""
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
    shapes = shapely.from_geojson([by_id[int(i)] for i in ids])
    rings = rings_of(shapes)

    def load(g: int, local: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        return rings if local is None else gather(*rings, local)

    return _RingCache(np.array([0, len(ids)], np.int64), load, budget=1 << 62), shapes
