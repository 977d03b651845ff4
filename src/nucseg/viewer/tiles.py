"""Deep Zoom tiles of a slide, read on demand through :func:`nucseg.slide.reader.open_slide`.

The tile arithmetic is OpenSlide's own :class:`openslide.deepzoom.DeepZoomGenerator` (what its
``deepzoom_server`` example and OMERO-style viewers use); :class:`ReaderSlide` presents any
nucseg reader (OpenSlide, tifffile, plain images) to it as an :class:`openslide.AbstractSlide`.
Coarse Deep Zoom levels are cut from one overview kept in memory (an extra pyramid level, read
once), so the first tiles of a slide whose coarsest level is large cost no full-level read.
Encoded tiles (JPEG or WebP) are kept in a least-recently-used cache.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import numpy as np
import openslide
from openslide.deepzoom import DeepZoomGenerator
from PIL import Image

from nucseg.scale import resize_image
from nucseg.slide.reader import SlideReader

__all__ = ["FORMATS", "ReaderSlide", "TileSource"]

FORMATS = {"jpeg": ("JPEG", "image/jpeg"), "webp": ("WEBP", "image/webp")}
#: Longest side of the in-memory overview level.
OVERVIEW_SIDE = 2048


class ReaderSlide(openslide.AbstractSlide):
    """A :class:`~nucseg.slide.reader.SlideReader` seen as an OpenSlide slide (RGBA regions),
    with one more, in-memory level of at most :data:`OVERVIEW_SIDE` pixels a side when the
    slide's own coarsest level is larger. Reads are serialised (tifffile handles are not
    thread-safe)."""

    def __init__(self, reader: SlideReader) -> None:
        super().__init__()
        self.reader = reader
        self.lock = threading.Lock()
        self._levels = [tuple(size) for size in reader.levels]
        self._downsamples = [float(d) for d in reader.downsamples]
        self._overview: np.ndarray | None = None
        width, height = reader.dimensions
        if max(self._levels[-1]) > OVERVIEW_SIDE:
            factor = max(width, height) / OVERVIEW_SIDE
            self._levels.append((max(1, round(width / factor)), max(1, round(height / factor))))
            self._downsamples.append(width / self._levels[-1][0])

    @classmethod
    def detect_format(cls, filename: Any) -> str | None:
        return None

    def close(self) -> None:
        self.reader.close()

    @property
    def level_count(self) -> int:
        return len(self._levels)

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return tuple(self._levels)

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        return tuple(self._downsamples)

    @property
    def properties(self) -> Mapping[str, str]:
        mpp = self.reader.mpp
        return {} if mpp is None else {"openslide.mpp-x": str(mpp), "openslide.mpp-y": str(mpp)}

    @property
    def associated_images(self) -> Mapping[str, Image.Image]:
        return {}

    def get_best_level_for_downsample(self, downsample: float) -> int:
        candidates = [i for i, d in enumerate(self._downsamples) if d <= downsample * 1.01]
        return max(candidates, key=lambda i: self._downsamples[i]) if candidates else 0

    def overview(self) -> np.ndarray | None:
        """The in-memory level (read from the slide's coarsest level on first use); None when
        the slide's own coarsest level is small enough."""
        if len(self._levels) == len(self.reader.levels):
            return None
        with self.lock:
            if self._overview is None:
                level = len(self.reader.levels) - 1
                w, h = self.reader.levels[level]
                pixels = self.reader.read_region(0, 0, w, h, level)
                self._overview = resize_image(pixels, self._levels[-1][::-1])
            return self._overview

    def read_region(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> Image.Image:
        x, y = location
        w, h = size
        if level < len(self.reader.levels):
            with self.lock:
                rgb = self.reader.read_region(x, y, w, h, level)
        else:
            rgb = _crop(self.overview(), x / self._downsamples[level], y / self._downsamples[level],
                        w, h)  # fmt: skip
        alpha = np.full(rgb.shape[:2] + (1,), 255, dtype=np.uint8)
        return Image.fromarray(np.concatenate([rgb, alpha], axis=2), "RGBA")


def _crop(image: np.ndarray, x: float, y: float, w: int, h: int) -> np.ndarray:
    out = np.full((h, w, 3), 255, dtype=np.uint8)
    x, y = round(x), round(y)
    r0, r1 = max(y, 0), min(y + h, image.shape[0])
    c0, c1 = max(x, 0), min(x + w, image.shape[1])
    if r0 < r1 and c0 < c1:
        out[r0 - y : r1 - y, c0 - x : c1 - x] = image[r0:r1, c0:c1]
    return out


class TileSource:
    """Deep Zoom descriptor and encoded tiles of one slide, with an LRU cache of tiles.

    Parameters
    ----------
    reader : SlideReader
        The open slide.
    tile_format : {"jpeg", "webp"}
        Encoding of the tiles.
    quality : int
        Encoder quality (0-100).
    cache_tiles : int
        Encoded tiles kept in memory.
    """

    def __init__(
        self,
        reader: SlideReader,
        *,
        tile_format: str = "jpeg",
        quality: int = 80,
        cache_tiles: int = 4096,
    ) -> None:
        if tile_format not in FORMATS:
            raise ValueError(f"tile format must be one of {sorted(FORMATS)}, got {tile_format!r}")
        self.slide = ReaderSlide(reader)
        self.format = tile_format
        self.quality = quality
        self.generator = DeepZoomGenerator(self.slide, tile_size=254, overlap=1)
        self._cache: OrderedDict[tuple[int, int, int], bytes] = OrderedDict()
        self._cache_tiles = cache_tiles
        self._lock = threading.Lock()

    @property
    def mime(self) -> str:
        return FORMATS[self.format][1]

    def dzi(self) -> str:
        """The Deep Zoom descriptor (XML) OpenSeadragon opens."""
        return self.generator.get_dzi(self.format)

    def warm(self, *, side: int = 1024) -> int:
        """Encode into the cache every tile of the Deep Zoom levels at most ``side`` pixels a
        side (what a browser asks for first); returns how many."""
        count = 0
        for level, size in enumerate(self.generator.level_dimensions):
            if max(size) > side:
                break
            cols, rows = self.generator.level_tiles[level]
            for col in range(cols):
                for row in range(rows):
                    self.tile(level, col, row)
                    count += 1
        return count

    def tile(self, level: int, col: int, row: int) -> bytes:
        """Encoded tile ``(col, row)`` of Deep Zoom ``level``.

        Raises
        ------
        ValueError
            If the level or the address does not exist.
        """
        key = (level, col, row)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        if not 0 <= level < self.generator.level_count:
            raise ValueError(f"no Deep Zoom level {level} (0..{self.generator.level_count - 1})")
        cols, rows = self.generator.level_tiles[level]
        if not (0 <= col < cols and 0 <= row < rows):
            raise ValueError(f"no tile {col}_{row} at level {level} ({cols} x {rows} tiles)")
        image = self.generator.get_tile(level, (col, row))
        buffer = io.BytesIO()
        image.save(buffer, FORMATS[self.format][0], quality=self.quality)
        data = buffer.getvalue()
        with self._lock:
            self._cache[key] = data
            if len(self._cache) > self._cache_tiles:
                self._cache.popitem(last=False)
        return data
