"""One chunk's result on disk: which nuclei it keeps, their measurements, outlines and pixels.

``<name>.npy`` holds the kept nuclei as local labels 1..n, cropped to their bounding box (work
pixels; its origin is in the Parquet file's metadata). ``<name>.parquet`` holds one row per kept
nucleus in local-label order: level-0 coordinates, um units, and its GeoJSON geometry. Both are
written under temporary names and renamed, the Parquet file last, so a chunk whose Parquet file
exists is complete.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ChunkInfo", "chunk_name", "read_chunk_info", "write_chunk"]

#: Per-nucleus columns of the chunk tables and of ``nuclei.parquet`` (which adds ``id``, ``chunk``).
COLUMNS = (
    "centroid_x",
    "centroid_y",
    "centroid_x_um",
    "centroid_y_um",
    "bbox_x0",
    "bbox_y0",
    "bbox_x1",
    "bbox_y1",
    "area_um2",
    "perimeter_um",
    "eccentricity",
    "solidity",
    "mean_hematoxylin_od",
)


@dataclasses.dataclass(frozen=True)
class ChunkInfo:
    """Where a finished chunk's files are and what they hold."""

    name: str
    parquet: Path
    npy: Path
    n: int
    origin: tuple[int, int]  # work-pixel (row, col) of the npy crop
    shape: tuple[int, int]
    cut: int
    quality: dict[str, Any] | None = None  # nucseg.quality figures of the chunk's tissue box
    types: tuple[str, ...] | None = None  # names of the nucleus types (None: no type head)


def chunk_name(index: tuple[int, int]) -> str:
    """File stem of a chunk's outputs, e.g. ``r0003_c0012``."""
    return f"r{index[0]:04d}_c{index[1]:04d}"


def write_chunk(
    plan: Any,
    index: tuple[int, int],
    pixels: np.ndarray,
    labels: np.ndarray,
    chunk_dir: Path,
    *,
    types: Any = None,
    stain: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Keep the nuclei of ``labels`` whose centroid is in the chunk's core; write their files.

    ``pixels`` and ``labels`` cover the chunk's window (core and halo), at work resolution.
    ``types`` (:class:`nucseg.nucleus_types.NucleusTypes` of ``labels``) adds the columns
    ``type`` and ``type_prob_<name>``. ``stain`` is what was decided for the slide's stains
    (``ChunkSegmenter.stain_decision``), for the quality figures' wording.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    import shapely
    from shapely import wkt

    from nucseg.geometry import nucleus_polygons, polygon_measurements
    from nucseg.measure import measure_nuclei

    name = chunk_name(index)
    figures = chunk_quality(pixels, labels, mpp=plan.work_mpp, stain=stain)
    r0, c0, r1, c1 = plan.core(index)
    wr0, wc0, wr1, wc1 = plan.window(index)
    rows_total, cols_total = plan.work_shape
    # measure only the labelled part of the window (a 1 x 1 corner when nothing is labelled)
    any_r, any_c = np.flatnonzero(labels.any(axis=1)), np.flatnonzero(labels.any(axis=0))
    t0, t1 = (int(any_r[0]), int(any_r[-1]) + 1) if any_r.size else (0, 1)
    l0, l1 = (int(any_c[0]), int(any_c[-1]) + 1) if any_c.size else (0, 1)
    halo_edges = (  # the part's edges that are halo edges of the window, not the slide's border
        wr0 > 0 and t0 == 0,
        wr1 < rows_total and t1 == labels.shape[0],
        wc0 > 0 and l0 == 0,
        wc1 < cols_total and l1 == labels.shape[1],
    )
    pixels, labels = pixels[t0:t1, l0:l1], labels[t0:t1, l0:l1]
    wr0, wc0 = wr0 + t0, wc0 + l0
    table = measure_nuclei(pixels, labels, perimeter=False)  # measured on the polygons below
    rows = table["centroid_row"] + wr0
    cols = table["centroid_col"] + wc0
    keep = (rows >= r0) & (rows < r1) & (cols >= c0) & (cols < c1)
    s = plan.scale
    if plan.roi_wkt is not None:  # centroids in level-0 pixel corners, as the ROI
        keep &= shapely.contains_xy(wkt.loads(plan.roi_wkt), (cols + 0.5) * s, (rows + 0.5) * s)
    kept = table["label"][keep]
    lut = np.zeros(int(labels.max(initial=0)) + 1, dtype=np.int32)
    lut[kept] = np.arange(1, kept.size + 1, dtype=np.int32)
    local = lut[labels]
    if kept.size:
        nz_r, nz_c = np.nonzero(np.any(local, axis=1)), np.nonzero(np.any(local, axis=0))
        top, bottom, left, right = nz_r[0][0], nz_r[0][-1] + 1, nz_c[0][0], nz_c[0][-1] + 1
    else:
        top = bottom = left = right = 0
    crop = np.ascontiguousarray(local[top:bottom, left:right])
    edges = [edge for edge, is_halo in zip(
        (local[0], local[-1], local[:, 0], local[:, -1]), halo_edges, strict=True
    ) if is_halo]  # fmt: skip
    cut = len(np.unique(np.concatenate(edges + [np.zeros(1, np.int32)]))) - 1

    offset = ((wr0 + top) * s, (wc0 + left) * s)
    polygons = [g for _, g in nucleus_polygons(crop, offset=offset, scale=s)] if kept.size else []
    geo = polygon_measurements(polygons, mpp=plan.mpp)
    shapes = np.asarray(polygons + [None], dtype=object)[:-1]
    hulls = shapely.area(shapely.convex_hull(shapes))
    bounds = shapely.bounds(shapes).reshape(-1, 4)
    geometries = shapely.to_geojson(shapes).tolist()  # GEOS's writer: full precision, compact
    columns = {
        "local_label": np.arange(1, kept.size + 1, dtype=np.int32),
        "centroid_x": geo["centroid_x_px"],
        "centroid_y": geo["centroid_y_px"],
        "centroid_x_um": geo["centroid_x_um"],
        "centroid_y_um": geo["centroid_y_um"],
        "bbox_x0": bounds[:, 0],
        "bbox_y0": bounds[:, 1],
        "bbox_x1": bounds[:, 2],
        "bbox_y1": bounds[:, 3],
        "area_um2": geo["area_um2"],
        "perimeter_um": geo["perimeter_um"],
        "eccentricity": table["eccentricity"][keep],
        "solidity": np.where(hulls > 0, geo["area_px2"] / np.maximum(hulls, 1e-12), 1.0),
        "mean_hematoxylin_od": table["mean_hematoxylin"][keep],
        "chunk_row": np.full(kept.size, index[0], dtype=np.int32),
        "chunk_col": np.full(kept.size, index[1], dtype=np.int32),
        "geometry": pa.array(geometries, type=pa.string()),
    }
    if types is not None:
        typed = types.columns(kept)
        columns["type"] = pa.array(typed.pop("type").tolist(), type=pa.string())
        columns.update(typed)
    meta = {
        "chunk": name,
        "n": int(kept.size),
        "origin": [int(wr0 + top), int(wc0 + left)],
        "shape": list(crop.shape),
        "cut": int(cut),
        "quality": figures,
        "types": None if types is None else list(types.names),
    }
    chunk_dir.mkdir(parents=True, exist_ok=True)
    _save(chunk_dir / f"{name}.npy", lambda tmp: np.save(tmp, crop))
    arrow = pa.table(columns).replace_schema_metadata({"nucseg.chunk": json.dumps(meta)})
    _save(chunk_dir / f"{name}.parquet", lambda tmp: pq.write_table(arrow, tmp))
    return {"chunk": name, "nuclei": int(kept.size), "cut": int(cut)}


def _save(path: Path, write: Any) -> None:
    """``write(tmp)`` under a temporary name (:func:`nucseg.atomic.temporary_name`, so a killed
    run's leftovers are recognised) renamed onto ``path``; on failure the temporary is removed
    and a write error names ``path`` and its cause (:func:`nucseg.atomic.write_error`)."""
    from nucseg.atomic import temporary_name, write_error

    tmp = temporary_name(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise write_error(err, path) from err
        raise


#: Chunk warnings left out of a slide's report: the slide's tissue mask already says where there is
#: tissue, and a chunk at the tissue's edge is mostly glass.
_CHUNK_IGNORED = ("little or no tissue",)


def chunk_quality(
    pixels: np.ndarray, labels: np.ndarray, *, mpp: float, stain: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """:func:`nucseg.quality.assess` of a chunk's tissue bounding box (None: no tissue);
    ``stain``: the slide's stain decision (``assess``'s ``stain_estimate``)."""
    from nucseg import quality
    from nucseg.slide.tissue import tissue_box

    box = tissue_box(pixels)
    if box is None:
        return None
    figures = quality.assess(
        np.ascontiguousarray(pixels[box]), labels[box], mpp=mpp, stain_estimate=stain
    )
    figures["warnings"] = [w for w in figures["warnings"] if not w.startswith(_CHUNK_IGNORED)]
    return figures


def read_chunk_info(chunk_dir: Path, name: str) -> ChunkInfo:
    """The metadata of a finished chunk."""
    import pyarrow.parquet as pq

    parquet = chunk_dir / f"{name}.parquet"
    meta = json.loads(pq.read_schema(parquet).metadata[b"nucseg.chunk"])
    return ChunkInfo(
        name=name,
        parquet=parquet,
        npy=chunk_dir / f"{name}.npy",
        n=int(meta["n"]),
        origin=tuple(meta["origin"]),
        shape=tuple(meta["shape"]),
        cut=int(meta["cut"]),
        quality=meta.get("quality"),
        types=None if meta.get("types") is None else tuple(meta["types"]),
    )
