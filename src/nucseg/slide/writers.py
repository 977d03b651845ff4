"""Assemble a slide's outputs from its finished chunks, streaming: never a whole slide in memory.

Nuclei get global ids 1..N in chunk order (the plan's row-major order), then local order. The
Parquet table and the GeoJSON are written one chunk at a time; the label image one band of
tile rows at a time, each band composed from the chunks' ``.npy`` crops read through memory maps
(where two chunks' nuclei overlap, the earlier chunk keeps the pixel). Every file is written under
a temporary name and renamed when complete.
"""

from __future__ import annotations

import gzip
import json
import math
import uuid
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from nucseg.io import atomic_write
from nucseg.slide.chunkio import COLUMNS, ChunkInfo

__all__ = [
    "compose_labels",
    "write_geojson",
    "write_label_pyramid",
    "write_parquet",
    "write_thumbnail",
]

_UUID_NAMESPACE = uuid.UUID("5d1f7c36-7a0c-4c1e-9a51-8e1f0c3b9d42")
TILE = 256


def _offsets(chunks: Sequence[ChunkInfo]) -> list[int]:
    offsets, total = [], 0
    for chunk in chunks:
        offsets.append(total)
        total += chunk.n
    return offsets


#: GeoParquet 1.0 metadata of the ``geometry`` column (https://geoparquet.org): geopandas,
#: DuckDB and QGIS read ``nuclei.parquet`` as a layer; ``nucseg view`` reads outlines from it.
GEO_METADATA = {
    "version": "1.0.0",
    "primary_column": "geometry",
    "columns": {"geometry": {"encoding": "WKB", "geometry_types": ["Polygon", "MultiPolygon"]}},
}


def _type_columns(chunks: Sequence[ChunkInfo]) -> list[str]:
    """``type`` and ``type_prob_<name>`` when the chunks' nuclei were typed, else nothing."""
    from nucseg.nucleus_types import prob_column

    names = chunks[0].types if chunks else None
    if any(chunk.types != names for chunk in chunks):
        raise ValueError("the chunks of one slide disagree on the nucleus types they hold")
    return [] if names is None else ["type"] + [prob_column(n) for n in names]


def write_parquet(path: Path, chunks: Sequence[ChunkInfo], *, overwrite: bool = False) -> int:
    """Write ``nuclei.parquet``: id, the :data:`COLUMNS`, chunk, the outline as WKB
    (``geometry``, level-0 pixel corners, as in the GeoJSON; GeoParquet) and, with a type head,
    ``type`` and ``type_prob_<name>`` per type; one row group per chunk."""
    import shapely

    typed = _type_columns(chunks)
    schema = pa.schema(
        [("id", pa.int64())]
        + [(c, pa.float64()) for c in COLUMNS]
        + [("chunk_row", pa.int32()), ("chunk_col", pa.int32()), ("geometry", pa.binary())]
        + [(c, pa.string() if c == "type" else pa.float32()) for c in typed],
        metadata={"geo": json.dumps(GEO_METADATA)},
    )
    total = 0
    with atomic_write(path, overwrite=overwrite) as tmp:
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            for chunk, offset in zip(chunks, _offsets(chunks), strict=True):
                table = pq.read_table(chunk.parquet, columns=["local_label", *COLUMNS])
                ids = pa.array(table["local_label"].to_numpy().astype(np.int64) + offset)
                index = table.num_rows
                columns = [ids] + [table[c].cast(pa.float64()) for c in COLUMNS]
                rc = pq.read_table(chunk.parquet, columns=["chunk_row", "chunk_col"])
                columns += [rc["chunk_row"], rc["chunk_col"]]
                outlines = pq.read_table(chunk.parquet, columns=["geometry"])["geometry"]
                wkb = shapely.to_wkb(shapely.from_geojson(outlines.to_numpy(zero_copy_only=False)))
                columns.append(pa.array(wkb, type=pa.binary()))
                if typed:
                    kinds = pq.read_table(chunk.parquet, columns=typed)
                    columns += [kinds[c].cast(schema.field(c).type) for c in typed]
                writer.write_table(pa.Table.from_arrays(columns, schema=schema))
                total += index
    return total


def write_geojson(
    path: Path, chunks: Sequence[ChunkInfo], *, stem: str, overwrite: bool = False
) -> int:
    """Write every nucleus as a QuPath detection (gzip-compressed if ``path`` ends in ``.gz``).

    Each feature's ``measurements`` hold its id and the :data:`COLUMNS`; its ``id`` is a
    version-5 UUID of the slide stem and the nucleus id. Typed nuclei are classified by their
    type with its colour (:data:`nucseg.nucleus_types.TYPE_COLOURS`), so QuPath colours them on
    import, and their ``type_prob_<name>`` join the measurements; others are "Nucleus".
    """
    from nucseg.nucleus_types import TYPE_COLOURS

    typed = _type_columns(chunks)
    opener = gzip.open if path.suffix == ".gz" else open
    total = 0
    with atomic_write(path, overwrite=overwrite) as tmp:
        with opener(tmp, "wt", encoding="utf-8") as fh:
            fh.write('{"type": "FeatureCollection", "features": [\n')
            first = True
            for chunk, offset in zip(chunks, _offsets(chunks), strict=True):
                table = pq.read_table(chunk.parquet).to_pydict()
                for i, local in enumerate(table["local_label"]):
                    nucleus = offset + local
                    measurements = {"id": nucleus}
                    measurements.update({c: table[c][i] for c in COLUMNS})
                    measurements.update({c: table[c][i] for c in typed[1:]})
                    kind = table["type"][i] if typed else "Nucleus"
                    colour = list(TYPE_COLOURS.get(kind, (0, 255, 0)))
                    feature = {
                        "type": "Feature",
                        "id": str(uuid.uuid5(_UUID_NAMESPACE, f"{stem}:{nucleus}")),
                        "geometry": "GEOMETRY",
                        "properties": {
                            "objectType": "detection",
                            "classification": {"name": kind, "color": colour},
                            "measurements": measurements,
                        },
                    }
                    text = json.dumps(feature, allow_nan=False)
                    text = text.replace('"GEOMETRY"', table["geometry"][i], 1)
                    fh.write(("" if first else ",\n") + text)
                    first = False
                    total += 1
            fh.write("\n]}\n")
    return total


def compose_labels(
    chunks: Sequence[ChunkInfo],
    rows: np.ndarray,
    cols: np.ndarray,
    *,
    scale: float,
    offsets: Sequence[int] | None = None,
) -> np.ndarray:
    """Global labels at level-0 pixel centres ``rows`` x ``cols`` (both increasing).

    Each level-0 pixel takes the label of the work pixel it lies in.
    """
    from nucseg.scale import source_pixels

    offsets = _offsets(chunks) if offsets is None else offsets
    work_rows, work_cols = source_pixels(rows, scale), source_pixels(cols, scale)
    out = np.zeros((len(work_rows), len(work_cols)), dtype=np.int32)
    if not len(work_rows) or not len(work_cols):
        return out
    for chunk, offset in zip(chunks, offsets, strict=True):
        (r0, c0), (h, w) = chunk.origin, chunk.shape
        if not chunk.n or r0 > work_rows[-1] or r0 + h <= work_rows[0]:
            continue
        if c0 > work_cols[-1] or c0 + w <= work_cols[0]:
            continue
        ri0, ri1 = np.searchsorted(work_rows, [r0, r0 + h])
        ci0, ci1 = np.searchsorted(work_cols, [c0, c0 + w])
        crop = np.load(chunk.npy, mmap_mode="r")
        block = crop[work_rows[ri0:ri1] - r0][:, work_cols[ci0:ci1] - c0]
        del crop
        target = out[ri0:ri1, ci0:ci1]
        paint = (block > 0) & (target == 0)
        target[paint] = block[paint] + offset
    return out


def _label_tiles(
    chunks: Sequence[ChunkInfo], shape: tuple[int, int], factor: int, scale: float
) -> Iterator[bytes]:
    """zlib-compressed tiles of the label level ``factor`` times smaller than level 0, row-major.

    Tiles are encoded here (tifffile writes encoded bytes as they are) so that the empty tiles
    of a mostly-background slide share one encoding instead of being compressed one by one.
    """
    offsets = _offsets(chunks)
    rows, cols = -(-shape[0] // factor), -(-shape[1] // factor)
    col_index = np.arange(cols) * factor
    empty = zlib.compress(np.zeros((TILE, TILE), dtype="<i4").tobytes(), 6)
    for ty in range(0, rows, TILE):
        row_index = np.arange(ty, min(ty + TILE, rows)) * factor
        band = compose_labels(chunks, row_index, col_index, scale=scale, offsets=offsets)
        for tx in range(0, cols, TILE):
            part = band[:, tx : tx + TILE]
            if not part.any():
                yield empty
                continue
            tile = np.zeros((TILE, TILE), dtype="<i4")
            tile[: part.shape[0], : part.shape[1]] = part
            yield zlib.compress(tile.tobytes(), 6)


def write_label_pyramid(
    path: Path,
    chunks: Sequence[ChunkInfo],
    *,
    shape: tuple[int, int],
    scale: float,
    mpp: float,
    min_levels: int = 3,
    overwrite: bool = False,
) -> int:
    """Write the level-0 label image as a tiled, zlib-compressed, pyramidal int32 OME-TIFF.

    Levels halve until the largest side is at most 1024 pixels, and there are at least
    ``min_levels``; lower levels take every second pixel (labels are not averaged). Returns the
    number of levels.
    """
    import tifffile

    levels = max(min_levels, 1 + math.ceil(math.log2(max(max(shape) / 1024, 1))))
    metadata = {
        "axes": "YX",
        "PhysicalSizeX": mpp,
        "PhysicalSizeXUnit": "µm",
        "PhysicalSizeY": mpp,
        "PhysicalSizeYUnit": "µm",
    }
    with atomic_write(path, overwrite=overwrite) as tmp:
        with tifffile.TiffWriter(tmp, bigtiff=shape[0] * shape[1] > 2**29, ome=True) as tif:
            for level in range(levels):
                factor = 2**level
                level_shape = (-(-shape[0] // factor), -(-shape[1] // factor))
                extra: dict[str, Any] = (
                    {"subifds": levels - 1, "metadata": metadata}
                    if level == 0
                    else {"subfiletype": 1}
                )
                tif.write(
                    _label_tiles(chunks, shape, factor, scale),
                    shape=level_shape,
                    dtype=np.int32,
                    tile=(TILE, TILE),
                    compression="zlib",
                    photometric="minisblack",
                    **extra,
                )
    return levels


def outline_overlay(
    rgb: np.ndarray, chunks: Sequence[ChunkInfo], *, shape: tuple[int, int], scale: float
) -> np.ndarray:
    """Nucleus outlines (yellow) drawn on a low-resolution view ``rgb`` of the whole slide."""
    out_h, out_w = rgb.shape[:2]
    rows = np.minimum(((np.arange(out_h) + 0.5) * shape[0] / out_h).astype(np.int64), shape[0] - 1)
    cols = np.minimum(((np.arange(out_w) + 0.5) * shape[1] / out_w).astype(np.int64), shape[1] - 1)
    out = rgb.copy()
    for start in range(0, out_h, 512):
        stop = min(start + 512, out_h)
        lo, hi = max(start - 1, 0), min(stop + 1, out_h)
        band = compose_labels(chunks, rows[lo:hi], cols, scale=scale)
        edge = np.zeros(band.shape, dtype=bool)
        edge[1:] |= band[1:] != band[:-1]
        edge[:-1] |= band[1:] != band[:-1]
        edge[:, 1:] |= band[:, 1:] != band[:, :-1]
        edge[:, :-1] |= band[:, 1:] != band[:, :-1]
        edge &= band > 0
        out[start:stop][edge[start - lo : start - lo + stop - start]] = (255, 255, 0)
    return out


#: Longest side of ``thumbnail_overlay.png`` (``nucseg slide --thumbnail-size``) and its size cap.
THUMBNAIL_SIZE = 4000
THUMBNAIL_MAX_BYTES = 2_000_000


def encode_thumbnail(rgb: np.ndarray, *, max_bytes: int = THUMBNAIL_MAX_BYTES) -> bytes | None:
    """PNG bytes of ``rgb``: true colour if under ``max_bytes`` (tried unless an estimate from a
    quarter of the rows is over twice that), else a 256-colour palette (Pillow's octree
    quantiser), else None (the caller then shrinks the picture)."""
    return _encode_thumbnail(rgb, max_bytes=max_bytes)[0]


def _encode_thumbnail(rgb: np.ndarray, *, max_bytes: int) -> tuple[bytes | None, int]:
    """:func:`encode_thumbnail` and the size in bytes of the smallest encoding tried.

    True colour is tried only when it may fit: its size is first estimated from a quarter of the
    rows, and a picture estimated at more than twice ``max_bytes`` goes straight to the palette
    (a slide's 4000 x 4000 overlay: 11 MB as true colour, 1.6 s to find out). The palette PNG is
    written at zlib level 3: on that overlay 0.15 s and 1 % smaller than level 9's 0.9 s.
    """
    import io

    from PIL import Image

    from nucseg.io import check_image

    rgb = check_image(rgb, name="rgb")
    bgr = rgb[..., ::-1]
    level = [cv2.IMWRITE_PNG_COMPRESSION, 6]
    smallest = 1 << 62
    estimate = 0
    if rgb.shape[0] >= 64:  # small pictures are cheap to encode whole
        ok, sample = cv2.imencode(".png", np.ascontiguousarray(bgr[::4]), level)
        estimate = 4 * sample.size if ok else 0
    if estimate <= 2 * max_bytes:
        ok, encoded = cv2.imencode(".png", bgr, level)
        if ok and encoded.size <= max_bytes:
            return encoded.tobytes(), int(encoded.size)
        smallest = int(encoded.size) if ok else smallest
    image = Image.fromarray(rgb).quantize(256, method=Image.Quantize.FASTOCTREE)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=3)
    smallest = min(smallest, buffer.tell())
    return (buffer.getvalue() if buffer.tell() <= max_bytes else None), smallest


def write_thumbnail(
    path: Path,
    view: np.ndarray,
    chunks: Sequence[ChunkInfo],
    *,
    shape: tuple[int, int],
    scale: float,
    size: int = THUMBNAIL_SIZE,
    max_bytes: int = THUMBNAIL_MAX_BYTES,
    overwrite: bool = False,
) -> tuple[int, int]:
    """Write ``thumbnail_overlay.png``: ``view`` (a low-resolution read of the whole slide)
    resampled so that its longest side is at most ``size``, with the nuclei outlines drawn.

    A picture over ``max_bytes`` as true-colour PNG is written with a 256-colour palette, and one
    still over it is shrunk until it fits: to the side at which its bytes, taken as proportional
    to its area, would be 9/10 of ``max_bytes``, and by at least a fifth. Returns the
    ``(width, height)`` written.
    """
    from nucseg.scale import resize_image

    if size < 1:
        raise ValueError(f"thumbnail size must be a positive number of pixels, got {size}")
    side = min(size, max(view.shape[:2]), max(shape))
    while True:
        factor = side / max(view.shape[:2])
        width = max(1, round(view.shape[1] * factor))
        height = max(1, round(view.shape[0] * factor))
        small = resize_image(view, (height, width))
        image = outline_overlay(small, chunks, shape=shape, scale=scale)
        encoded, nbytes = _encode_thumbnail(image, max_bytes=max_bytes)
        if encoded is not None or side <= 64:
            break
        side = max(64, min(int(side * 0.8), int(side * (0.9 * max_bytes / nbytes) ** 0.5)))
    with atomic_write(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(encoded or encode_thumbnail(image, max_bytes=1 << 62))
    return width, height
