"""Tissue masks from a low-resolution view of a slide, and regions of interest.

The overview is read from the coarsest pyramid level that is still at least as fine as the wanted
resolution, window by window, so a slide without a pyramid never has its level 0 decoded at once.
Tissue is where the largest per-channel optical density ``-ln((I + 1) / 256)`` exceeds a
threshold (0.15 by default: the tissue threshold of the Macenko normaliser; white glass is about
0.06), closed, hole-filled and cleared of specks smaller than ``min_area_um2``. At full
resolution, :func:`stained` and :func:`tissue_box` give the pixels of a chunk that the engine
treats as tissue.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from scipy import ndimage as ndi

from nucseg.scale import resize_image
from nucseg.slide.reader import SlideReader

__all__ = ["check_roi", "read_overview", "roi_geometry", "roi_mask", "tissue_mask"]

#: Microns per pixel of the overview on which tissue is detected.
OVERVIEW_MPP = 8.0


def read_overview(
    reader: SlideReader, downsample: float, *, window: int = 2048
) -> tuple[np.ndarray, float]:
    """Read the whole slide shrunk about ``downsample`` times, in windows.

    Returns
    -------
    image : (rows, cols, 3) uint8 array
        The overview.
    downsample : float
        Its exact level-0 pixels per overview pixel (along columns).
    """
    width, height = reader.dimensions
    downsample = max(1.0, float(downsample))
    out_w, out_h = max(1, round(width / downsample)), max(1, round(height / downsample))
    level = reader.best_level(downsample)
    level_scale = reader.downsamples[level]
    out = np.empty((out_h, out_w, 3), dtype=np.uint8)
    step = max(1, int(window * level_scale / downsample))  # overview pixels per window
    for r in range(0, out_h, step):
        for c in range(0, out_w, step):
            h, w = min(step, out_h - r), min(step, out_w - c)
            x0, y0 = round(c * width / out_w), round(r * height / out_h)
            x1, y1 = round((c + w) * width / out_w), round((r + h) * height / out_h)
            lw = max(1, round((x1 - x0) / level_scale))
            lh = max(1, round((y1 - y0) / level_scale))
            region = reader.read_region(x0, y0, lw, lh, level)
            out[r : r + h, c : c + w] = resize_image(region, (h, w))
    return out, width / out_w


#: Pixels whose brightest channel is below this are black, not tissue (label, pen, a scanner's
#: fill): as :data:`nucseg.slide.engine.BLACK_LEVEL`, which keeps them from the network.
BLACK_LEVEL = 32

#: Tissue pieces are dropped below ``min_area_um2`` or this fraction of the slide, if smaller.
MIN_AREA_FRACTION = 0.05


def tissue_mask(
    overview: np.ndarray,
    *,
    mpp: float,
    threshold: float = 0.15,
    min_area_um2: float = 5000.0,
    closing_um: float = 16.0,
) -> np.ndarray:
    """Boolean tissue mask of an overview image.

    Parameters
    ----------
    overview : (rows, cols, 3) uint8 array
        Low-resolution RGB view of the slide.
    mpp : float
        Microns per overview pixel.
    threshold : float, optional
        Largest channel optical density above which a pixel is tissue.
    min_area_um2 : float, optional
        Tissue pieces smaller than this (or than :data:`MIN_AREA_FRACTION` of the overview,
        if less) are dropped. Black pixels (:data:`BLACK_LEVEL`) are never tissue.
    closing_um : float, optional
        Radius of the morphological closing that joins nearby tissue.

    Returns
    -------
    (rows, cols) bool array

    Examples
    --------
    >>> image = np.full((20, 20, 3), 240, dtype=np.uint8)
    >>> image[5:15, 5:15] = (150, 60, 150)
    >>> int(tissue_mask(image, mpp=8.0, min_area_um2=0).sum())
    100
    """
    od = -np.log((overview.astype(np.float32) + 1) / 256)
    mask = (od.max(axis=2) > threshold) & (overview.max(axis=2) >= BLACK_LEVEL)
    # a slide smaller than the least piece (a small crop saved as a slide) keeps its tissue
    min_area_um2 = min(min_area_um2, MIN_AREA_FRACTION * mask.size * mpp * mpp)
    radius = int(round(closing_um / mpp))
    if radius > 0:
        disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        padded = np.pad(mask, radius).astype(np.uint8)
        mask = cv2.morphologyEx(padded, cv2.MORPH_CLOSE, disk)[radius:-radius, radius:-radius] > 0
    mask = ndi.binary_fill_holes(mask)
    labels, n = ndi.label(mask)
    if n:
        sizes = np.bincount(labels.ravel())
        keep = sizes * mpp * mpp >= min_area_um2
        keep[0] = False
        mask = keep[labels]
    return mask


def roi_geometry(
    rects: list[tuple[int, int, int, int]] | None = None,
    geojson: str | os.PathLike | None = None,
) -> Any:
    """Union of level-0 rectangles ``(x, y, w, h)`` and the polygons of a GeoJSON file, or None.

    The GeoJSON may be a FeatureCollection, a list of features (QuPath's export) or a single
    feature or geometry; its Polygon and MultiPolygon geometries are used.

    Raises
    ------
    ValueError
        If a rectangle is empty or the file holds no polygon; the message names the file.
    """
    import shapely
    from shapely.geometry import box, shape

    parts = []
    for x, y, w, h in rects or []:
        if w <= 0 or h <= 0:
            raise ValueError(f"--roi {x},{y},{w},{h}: width and height must be positive")
        parts.append(box(x, y, x + w, y + h))
    if geojson is not None:
        try:
            data = json.loads(Path(geojson).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{geojson}: cannot read it as GeoJSON: {err}") from err
        features = data.get("features", [data]) if isinstance(data, dict) else data
        found = 0
        for feature in features:
            geometry = feature.get("geometry", feature) if isinstance(feature, dict) else None
            if geometry and geometry.get("type") in ("Polygon", "MultiPolygon"):
                parts.append(shapely.make_valid(shape(geometry)))
                found += 1
        if not found:
            raise ValueError(f"{geojson}: holds no Polygon or MultiPolygon annotation")
    if not parts:
        return None
    return shapely.union_all(parts)


def check_roi(geometry: Any, dimensions: tuple[int, int], path: str | os.PathLike) -> None:
    """Raise ``ValueError`` if a ROI (level-0 geometry, or None) misses the slide entirely;
    ``dimensions`` is the slide's level-0 ``(width, height)``."""
    import shapely

    if geometry is None:
        return
    width, height = dimensions
    if not geometry.intersects(shapely.box(0, 0, width, height)):
        x0, y0, x1, y1 = (round(v) for v in geometry.bounds)
        raise ValueError(
            f"{path}: the ROI (x {x0}-{x1}, y {y0}-{y1}) lies outside the slide ({width} x "
            f"{height} level-0 pixels)"
        )


def roi_mask(geometry: Any, shape: tuple[int, int], downsample: float) -> np.ndarray:
    """Rasterise a level-0 ROI geometry onto an overview grid of ``shape`` (rows, cols)."""
    mask = np.zeros(shape, dtype=np.uint8)
    polygons = getattr(geometry, "geoms", [geometry])
    for polygon in polygons:
        if polygon.geom_type != "Polygon" or polygon.is_empty:
            continue
        exterior = np.round(np.asarray(polygon.exterior.coords) / downsample).astype(np.int32)
        cv2.fillPoly(mask, [exterior], 1)
        for interior in polygon.interiors:
            hole = np.round(np.asarray(interior.coords) / downsample).astype(np.int32)
            cv2.fillPoly(mask, [hole], 0)
    return mask > 0


# --- the tissue pixels of a chunk (the engine's test for giving a tile to the network) ---


def tissue_box(image: np.ndarray, *, margin: int = 0) -> tuple[slice, slice] | None:
    """Rows and columns of the bounding box of the tissue pixels of ``image`` (:func:`stained`),
    grown by ``margin`` and clipped; None when there is none."""
    return _mask_box(stained(image), margin=margin)


def _mask_box(mask: np.ndarray, *, margin: int = 0) -> tuple[slice, slice] | None:
    """:func:`tissue_box` of a 2-D boolean mask (the :func:`stained` pixels)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not rows.size:
        return None
    r0, r1 = max(rows[0] - margin, 0), min(rows[-1] + 1 + margin, mask.shape[0])
    c0, c1 = max(cols[0] - margin, 0), min(cols[-1] + 1 + margin, mask.shape[1])
    return slice(int(r0), int(r1)), slice(int(c0), int(c1))


def mask_boxes(
    mask: np.ndarray, *, margin: int = 0, cell: int = 32, max_pieces: int = 64
) -> list[tuple[slice, slice]]:
    """Bounding boxes of the separate pieces of tissue in ``mask``, each grown by ``margin``.

    Pieces are grouped on a grid of ``cell`` x ``cell`` pixels (those less than about twice the
    margin apart, to a cell or two, share a group); groups whose grown boxes overlap are merged
    (until no two boxes overlap), so every tissue pixel lies in exactly one box with ``margin``
    pixels (or the image's edge) around its tissue. One piece gives
    :func:`_mask_box`'s box, and so do more than ``max_pieces`` (scattered specks: not worth
    a box each). A chunk holding several fragments, or the corners of four, then allocates,
    stitches and post-processes their boxes, not the glass between them.
    """
    if not mask.any():
        return []
    rows, cols = -(-mask.shape[0] // cell), -(-mask.shape[1] // cell)
    padded = np.zeros((rows * cell, cols * cell), dtype=bool)
    padded[: mask.shape[0], : mask.shape[1]] = mask
    coarse = padded.reshape(rows, cell, cols, cell).any(axis=(1, 3))
    reach = -(-margin // cell)  # cells a side: pieces nearer than their margins are grouped
    grown = coarse
    if reach:
        grown = ndi.binary_dilation(coarse, iterations=reach, structure=np.ones((3, 3), bool))
    pieces, count = ndi.label(grown, structure=np.ones((3, 3), bool))
    if count > max_pieces:
        whole = _mask_box(mask, margin=margin)
        return [] if whole is None else [whole]
    boxes = []
    for found in ndi.find_objects(pieces):
        r0, c0 = found[0].start * cell, found[1].start * cell
        r1, c1 = min(found[0].stop * cell, mask.shape[0]), min(found[1].stop * cell, mask.shape[1])
        box = _mask_box(mask[r0:r1, c0:c1])
        if box is not None:  # the piece's tight box, in the image's pixels
            boxes.append([r0 + box[0].start, c0 + box[1].start, r0 + box[0].stop, c0 + box[1].stop])
    merged = True
    while merged:  # grown boxes that meet become one
        merged = False
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                a, b = boxes[i], boxes[j]
                if (
                    a[0] - margin < b[2] + margin
                    and b[0] - margin < a[2] + margin
                    and a[1] - margin < b[3] + margin
                    and b[1] - margin < a[3] + margin
                ):
                    boxes[i] = [min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])]
                    del boxes[j]
                    merged = True
                    break
            if merged:
                break
    return [
        (slice(max(r0 - margin, 0), min(r1 + margin, mask.shape[0])),
         slice(max(c0 - margin, 0), min(c1 + margin, mask.shape[1])))
        for r0, c0, r1, c1 in sorted(boxes)
    ]  # fmt: skip


def _darkest(image: np.ndarray) -> np.ndarray:
    """Per-pixel minimum over the three channels (``image.min(axis=2)``, several times faster)."""
    return np.minimum(np.minimum(image[..., 0], image[..., 1]), image[..., 2])


# intensity below which a channel's optical density -ln((I + 1) / 256) exceeds 0.15
_TISSUE_LEVEL = int(np.floor(256 * np.exp(-0.15) - 1)) + 1
#: Pixels whose brightest channel is below this are black, not stain: an optical density above 2
#: in all three channels, which H&E does not reach (eosin lets red through, haematoxylin blue). A
#: label area, a pen mark, a scanner's black fill or an all-black image is not given to the
#: network, which would take large parts of it for nuclei.
BLACK_LEVEL = 32


def stained(image: np.ndarray) -> np.ndarray:
    """Pixels that may be stained tissue: some channel's optical density above 0.15 (darker than
    glass) and not black (:data:`BLACK_LEVEL`)."""
    brightest = np.maximum(np.maximum(image[..., 0], image[..., 1]), image[..., 2])
    return (_darkest(image) < _TISSUE_LEVEL) & (brightest >= BLACK_LEVEL)
