"""Writing pyramidal test slides with tifffile: generic tiled TIFF, Aperio-style SVS, OME-TIFF.

The pixels come from a function ``region(y, x, h, w) -> (h, w, 3) uint8`` of level-0 pixels, so
a slide of any size is written tile by tile without ever holding a level in memory, or from an
array (grey or RGB, any integer dtype). The one slide builder of the tests and the benchmarks
(``bench_slide.py``, ``bench_cohort.py``, ``slide_seams.py``, the failure matrix's slides).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import tifffile

from nucseg.scale import resize_image

__all__ = ["FLAVOURS", "mosaic_region", "write_slide"]

FLAVOURS = ("tiff", "subifd", "svs", "ome")

Region = Callable[[int, int, int, int], np.ndarray]


def _level_tiles(
    region: Region, shape: tuple[int, int], factor: int, tile: int, pixel: np.ndarray
) -> Iterator[np.ndarray]:
    """Tiles, in row-major order, of the level ``factor`` times smaller than level 0; ``pixel``
    is the fill beyond the slide's edge (its shape and dtype: a pixel's)."""
    rows, cols = shape
    level_rows, level_cols = -(-rows // factor), -(-cols // factor)
    for ty in range(0, level_rows, tile):
        for tx in range(0, level_cols, tile):
            h, w = min(tile, level_rows - ty), min(tile, level_cols - tx)
            pixels = region(ty * factor, tx * factor, h * factor, w * factor)
            if factor > 1:
                pixels = resize_image(pixels, (h, w))
            out = np.empty((tile, tile, *pixel.shape), dtype=pixel.dtype)
            out[:] = pixel
            out[:h, :w] = pixels
            yield out


def write_slide(
    path: str | os.PathLike,
    shape: tuple[int, int],
    region: Region | np.ndarray,
    *,
    mpp: float | None,
    flavour: str = "tiff",
    levels: int = 3,
    tile: int = 256,
    compression: str | None = "jpeg",
) -> Path:
    """Write a tiled pyramidal slide: the one builder of the tests' and benchmarks' slides.

    Parameters
    ----------
    path : path-like
        Output file (``.tif``, ``.svs`` or ``.ome.tif``).
    shape : (int, int)
        Level-0 ``(rows, columns)``.
    region : callable or (rows, columns[, channels]) array
        ``region(y, x, h, w)`` returns level-0 ``(h, w, 3) uint8`` pixels; an array is used
        directly, with its dtype and channels (grey or RGB; beyond its edge: the dtype's white).
    mpp : float or None
        Microns per pixel to record (None: record none).
    flavour : {"tiff", "subifd", "svs", "ome"}
        "tiff": generic tiled TIFF, levels as pages, mpp in the resolution tags (centimetres);
        "subifd": the same with the levels as SubIFDs of the first page (one level for
        OpenSlide's generic TIFF driver); "svs": "tiff" with an Aperio ``ImageDescription``
        (``|MPP = ...``), what OpenSlide's Aperio driver reads; "ome": OME-TIFF with SubIFD
        levels and ``PhysicalSizeX/Y``.
    levels : int
        Pyramid levels, each half the size of the previous one (area averaged).
    tile : int
        Tile side in pixels.
    compression : str or None
        TIFF compression ("jpeg", "zlib", None).
    """
    if flavour not in FLAVOURS:
        raise ValueError(f"flavour must be one of {FLAVOURS}, got {flavour!r}")
    pixel = np.full(3, 255, np.uint8)
    if isinstance(region, np.ndarray):
        array = region
        pixel = np.full(array.shape[2:], np.iinfo(array.dtype).max, array.dtype)

        def region(y: int, x: int, h: int, w: int) -> np.ndarray:
            out = np.empty((h, w, *pixel.shape), dtype=pixel.dtype)
            out[:] = pixel
            part = array[y : y + h, x : x + w]
            out[: part.shape[0], : part.shape[1]] = part
            return out

    rows, cols = shape
    path = Path(path)
    options = {"tile": (tile, tile), "compression": compression, "dtype": pixel.dtype,
               "photometric": "rgb" if pixel.shape == (3,) else "minisblack"}  # fmt: skip
    if compression == "jpeg":
        options["compressionargs"] = {"level": 90}
    with tifffile.TiffWriter(path, bigtiff=rows * cols > 2**31, ome=flavour == "ome") as tif:
        for level in range(levels):
            factor = 2**level
            level_shape = (-(-rows // factor), -(-cols // factor), *pixel.shape)
            tif.write(
                _level_tiles(region, (rows, cols), factor, tile, pixel),
                shape=level_shape,
                **options,
                **_level_tags(flavour, level, levels, mpp, (rows, cols), tile),
            )
    return path


def _level_tags(
    flavour: str, level: int, levels: int, mpp: float | None, shape: tuple[int, int], tile: int
) -> dict:
    """tifffile's ``write`` options of one level: its place in the pyramid and its mpp."""
    extra: dict = {}
    if level == 0 and flavour in ("ome", "subifd"):
        extra["subifds"] = levels - 1
    elif level and flavour != "svs":
        extra["subfiletype"] = 1
    if flavour == "ome":
        if level == 0:
            extra["metadata"] = {"axes": "YXS"}
            if mpp is not None:
                extra["metadata"].update(PhysicalSizeX=mpp, PhysicalSizeXUnit="µm",
                                         PhysicalSizeY=mpp, PhysicalSizeYUnit="µm")  # fmt: skip
        return extra
    extra["metadata"] = None
    if level == 0 and flavour == "svs":
        rows, cols = shape
        extra["description"] = (
            f"Aperio Image Library v12.0.0\r\n{cols}x{rows} [0,0 {cols}x{rows}] "
            f"({tile}x{tile}) JPEG/RGB Q=90"
            + (f"|AppMag = 40|MPP = {mpp}" if mpp is not None else "")
        )
    if mpp is not None:
        level_mpp = 1e4 / (1e4 / mpp) * 2**level  # as the resolution tag of level 0 records it
        extra["resolution"] = (1e4 / level_mpp, 1e4 / level_mpp)
        extra["resolutionunit"] = "CENTIMETER"
    return extra


def mosaic_region(
    images: Sequence[np.ndarray], origins: Sequence[tuple[int, int]], *, background: int = 255
) -> Region:
    """``region(y, x, h, w)`` of a white canvas with ``images`` pasted at ``(row, col)`` origins."""
    boxes = [
        (r, c, r + im.shape[0], c + im.shape[1]) for im, (r, c) in zip(images, origins, strict=True)
    ]

    def region(y: int, x: int, h: int, w: int) -> np.ndarray:
        out = np.full((h, w) + images[0].shape[2:], background, dtype=images[0].dtype)
        for image, (r0, c0, r1, c1) in zip(images, boxes, strict=True):
            top, bottom, left, right = max(r0, y), min(r1, y + h), max(c0, x), min(c1, x + w)
            if top < bottom and left < right:
                out[top - y : bottom - y, left - x : right - x] = image[
                    top - r0 : bottom - r0, left - c0 : right - c0
                ]
        return out

    return region
