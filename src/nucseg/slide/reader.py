"""Reading whole-slide images: one small interface over OpenSlide, tifffile and plain images.

Every reader gives the slide's ``dimensions`` (level-0 width and height), its pyramid ``levels``
(``(width, height)`` each) and their ``downsamples``, its microns per pixel (``mpp``, None when the
file does not record it) and ``read_region(x, y, w, h, level)``, which returns an ``(h, w, 3)
uint8`` RGB array. As in OpenSlide, ``x`` (column) and ``y`` (row) are always level-0 pixels
while ``w`` and ``h`` are pixels of ``level``; pixels outside the slide read as white. No reader
ever decodes a whole level 0: OpenSlide and :class:`TiffReader` decode only the tiles a region
touches.

Which reader opens a file (:func:`open_slide`):

1. OME-TIFF: :class:`TiffReader` (tifffile), mpp from the OME ``PhysicalSizeX`` attribute.
2. Anything OpenSlide opens (SVS, NDPI, MRXS, SCN, Philips TIFF, DICOM, generic tiled TIFF):
   :class:`OpenSlideReader`, mpp from ``openslide.mpp-x``.
3. Other TIFFs: :class:`TiffReader`, mpp from the resolution tags (centimetre or inch units).
4. PNG, JPEG and small TIFFs OpenSlide refuses: :class:`ImageReader`, which holds the image in
   memory (``nucseg.io.read_image``) and has no mpp.
"""

from __future__ import annotations

import errno
import logging
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

log = logging.getLogger(__name__)

__all__ = ["ImageReader", "OpenSlideReader", "SlideReader", "TiffReader", "open_slide"]

_TIFF_SUFFIXES = {".tif", ".tiff", ".btf", ".tf8"}
#: Plain image files read whole into memory (no pyramid): at most this many pixels.
MAX_PLAIN_PIXELS = 400_000_000


class SlideReader:
    """Base class of the readers: the shared interface and its checks.

    Attributes
    ----------
    path : pathlib.Path
        The slide file.
    format : str
        What read it, e.g. ``"openslide:aperio"``, ``"tifffile:ome"``, ``"image"``.
    levels : list of (int, int)
        ``(width, height)`` of each pyramid level, level 0 first.
    downsamples : list of float
        Level-0 pixels per pixel of each level.
    mpp : float or None
        Microns per level-0 pixel (the mean of x and y when they differ), None if unknown.
    """

    format = "unknown"

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.levels: list[tuple[int, int]] = []
        self.downsamples: list[float] = []
        self.mpp: float | None = None

    @property
    def dimensions(self) -> tuple[int, int]:
        """Level-0 ``(width, height)``."""
        return self.levels[0]

    def best_level(self, downsample: float) -> int:
        """The coarsest level whose downsample is at most ``downsample`` (1 % tolerance)."""
        candidates = [i for i, d in enumerate(self.downsamples) if d <= downsample * 1.01]
        return max(candidates, key=lambda i: self.downsamples[i]) if candidates else 0

    def read_region(self, x: int, y: int, w: int, h: int, level: int = 0) -> np.ndarray:
        """Read ``(h, w, 3) uint8`` RGB pixels of ``level`` whose top-left is level-0 (x, y).

        Pixels outside the slide are white (255).
        """
        if not 0 <= level < len(self.levels):
            raise ValueError(
                f"{self.path}: level {level} does not exist (0..{len(self.levels) - 1})"
            )
        if w <= 0 or h <= 0:
            raise ValueError(f"region size must be positive, got w={w}, h={h}")
        try:
            return self._read(int(x), int(y), int(w), int(h), level)
        except MemoryError:
            raise
        except Exception as err:  # OpenSlideError, a codec's error, a short read: one line
            reason = str(err).replace("\n", " ") or type(err).__name__
            raise ValueError(
                f"{self.path}: cannot read its pixels (level {level}, x {x}, y {y}): {reason} "
                "(damaged or truncated?)"
            ) from err

    def _read(self, x: int, y: int, w: int, h: int, level: int) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        """Release the file."""

    def __enter__(self) -> SlideReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> dict[str, Any]:
        """Format, dimensions, levels and mpp, JSON-serialisable (for the report)."""
        return {
            "path": str(self.path),
            "format": self.format,
            "dimensions": list(self.dimensions),
            "levels": [list(size) for size in self.levels],
            "downsamples": [round(d, 4) for d in self.downsamples],
            "mpp": self.mpp,
        }


def _mean_mpp(mpp_x: float | None, mpp_y: float | None) -> float | None:
    values = [v for v in (mpp_x, mpp_y) if v is not None and np.isfinite(v) and v > 0]
    return float(np.mean(values)) if values else None


class OpenSlideReader(SlideReader):
    """A slide read by OpenSlide (openslide-python with the openslide-bin library)."""

    def __init__(self, path: str | os.PathLike) -> None:
        import openslide

        super().__init__(path)
        self._slide = openslide.OpenSlide(os.fspath(path))
        props = self._slide.properties
        self.format = f"openslide:{props.get('openslide.vendor', 'unknown')}"
        self.levels = [tuple(int(v) for v in size) for size in self._slide.level_dimensions]
        self.downsamples = [float(d) for d in self._slide.level_downsamples]
        self.mpp = _mean_mpp(
            _float(props.get("openslide.mpp-x")), _float(props.get("openslide.mpp-y"))
        )

    def _read(self, x: int, y: int, w: int, h: int, level: int) -> np.ndarray:
        region = np.asarray(self._slide.read_region((x, y), level, (w, h)))  # RGBA, premultiplied
        rgb = region[..., :3].copy()
        alpha = region[..., 3]
        if not alpha.all():  # transparent pixels (outside the slide or scanned area): white
            rgb[alpha == 0] = 255
        return rgb

    def close(self) -> None:
        self._slide.close()


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class TiffReader(SlideReader):
    """A TIFF read with tifffile, decoding only the tiles (or strips) a region touches.

    Pyramid levels are the series' levels (OME-TIFF SubIFDs or pages); mpp comes from the OME
    ``PhysicalSizeX``/``PhysicalSizeY`` (micrometres) or else from the resolution tags.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__(path)
        self._tif = tifffile.TiffFile(os.fspath(path))
        series = self._tif.series[0]
        self.format = "tifffile:ome" if self._tif.is_ome else "tifffile"
        self._pages = []
        for level in series.levels:
            page = level.keyframe
            if page.photometric not in (tifffile.PHOTOMETRIC.RGB, tifffile.PHOTOMETRIC.YCBCR) or (
                page.samplesperpixel < 3 or page.dtype != np.uint8 or page.imagedepth > 1
            ):
                raise ValueError(
                    f"{self.path}: expected 8-bit RGB pages, got {page.photometric.name} with "
                    f"{page.samplesperpixel} samples of {page.dtype}"
                )
            self._pages.append(page)
            self.levels.append((int(page.imagewidth), int(page.imagelength)))
        width0 = self.levels[0][0]
        self.downsamples = [width0 / w for w, _ in self.levels]
        self.mpp = self._ome_mpp() if self._tif.is_ome else None
        if self.mpp is None:
            self.mpp = _resolution_mpp(self._pages[0])

    def _ome_mpp(self) -> float | None:
        xml = self._tif.ome_metadata or ""
        values = {}
        for axis in ("X", "Y"):
            match = re.search(rf'PhysicalSize{axis}="([^"]+)"', xml)
            unit = re.search(rf'PhysicalSize{axis}Unit="([^"]+)"', xml)
            if match:
                scale = {"µm": 1.0, "um": 1.0, "nm": 1e-3, "mm": 1e3, "cm": 1e4}.get(
                    unit.group(1) if unit else "µm"
                )
                values[axis] = _float(match.group(1)) * scale if scale else None
        return _mean_mpp(values.get("X"), values.get("Y"))

    def _read(self, x: int, y: int, w: int, h: int, level: int) -> np.ndarray:
        page = self._pages[level]
        scale = self.downsamples[level]
        left, top = round(x / scale), round(y / scale)
        out = np.full((h, w, 3), 255, dtype=np.uint8)
        width, height = self.levels[level]
        r0, r1 = max(top, 0), min(top + h, height)
        c0, c1 = max(left, 0), min(left + w, width)
        if r0 >= r1 or c0 >= c1:
            return out
        seg_h = page.tilelength if page.is_tiled else page.rowsperstrip
        seg_w = page.tilewidth if page.is_tiled else width
        per_row = -(-width // seg_w)
        fh = self._tif.filehandle
        for sr in range(r0 // seg_h, (r1 - 1) // seg_h + 1):
            for sc in range(c0 // seg_w, (c1 - 1) // seg_w + 1):
                index = sr * per_row + sc
                offset, count = page.dataoffsets[index], page.databytecounts[index]
                fh.seek(offset)
                data = fh.read(count)
                segment, _, shape = page.decode(data, index, jpegtables=page.jpegtables)
                segment = segment.reshape(shape[1:])[..., :3]  # (rows, cols, samples)
                top_px, left_px = sr * seg_h, sc * seg_w
                rr0, rr1 = max(r0, top_px), min(r1, top_px + segment.shape[0], height)
                cc0, cc1 = max(c0, left_px), min(c1, left_px + segment.shape[1], width)
                out[rr0 - top : rr1 - top, cc0 - left : cc1 - left] = segment[
                    rr0 - top_px : rr1 - top_px, cc0 - left_px : cc1 - left_px
                ]
        return out

    def close(self) -> None:
        self._tif.close()


def _resolution_mpp(page: Any) -> float | None:
    """Microns per pixel from a TIFF page's X/YResolution and ResolutionUnit tags."""
    unit = page.tags.get("ResolutionUnit")
    unit = int(unit.value) if unit is not None else 2
    microns = {2: 25400.0, 3: 10000.0}.get(unit)  # inch, centimetre; 1 = no absolute unit
    if microns is None:
        return None
    values = []
    for name in ("XResolution", "YResolution"):
        tag = page.tags.get(name)
        if tag is None:
            return None
        numerator, denominator = tag.value
        if numerator <= 0 or denominator <= 0:
            return None
        values.append(microns * denominator / numerator)
    mpp = _mean_mpp(*values)
    if mpp is not None and unit == 2 and mpp > 100:  # 72 dpi and the like: a screen default
        return None
    return mpp


class ImageReader(SlideReader):
    """A plain image (PNG, JPEG, small TIFF) held in memory; one level, no mpp."""

    format = "image"

    def __init__(self, path: str | os.PathLike) -> None:
        from nucseg.io import read_image

        super().__init__(path)
        self._image = read_image(path)
        rows, cols = self._image.shape[:2]
        if rows * cols > MAX_PLAIN_PIXELS:
            raise ValueError(f"{self.path}: {rows} x {cols} pixels is too large for a plain image")
        self.levels = [(cols, rows)]
        self.downsamples = [1.0]

    def _read(self, x: int, y: int, w: int, h: int, level: int) -> np.ndarray:
        out = np.full((h, w, 3), 255, dtype=np.uint8)
        rows, cols = self._image.shape[:2]
        r0, r1, c0, c1 = max(y, 0), min(y + h, rows), max(x, 0), min(x + w, cols)
        if r0 < r1 and c0 < c1:
            out[r0 - y : r1 - y, c0 - x : c1 - x] = self._image[r0:r1, c0:c1]
        return out


def open_slide(path: str | os.PathLike) -> SlideReader:
    """Open a slide with the first reader that accepts it (see the module docstring).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    IsADirectoryError
        If ``path`` is a folder.
    ValueError
        If no reader can open it; the message names the file.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(
            errno.EISDIR, f"{path} is a folder, not a slide file (give the slide's file)", str(path)
        )
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such slide file")
    is_tiff = path.suffix.lower() in _TIFF_SUFFIXES or path.name.lower().endswith(".ome.tif")
    if is_tiff:
        try:
            with tifffile.TiffFile(path) as tif:
                ome = tif.is_ome
        except Exception as err:
            raise ValueError(f"{path}: not a readable TIFF: {err}") from err
        if ome:
            return TiffReader(path)
    try:
        import openslide

        return OpenSlideReader(path)
    except (openslide.OpenSlideUnsupportedFormatError, openslide.OpenSlideError) as err:
        log.debug("%s: OpenSlide cannot open it (%s)", path, err)
    if is_tiff:
        try:
            with tifffile.TiffFile(path) as tif:
                page = tif.pages.first
                small = page.imagewidth * page.imagelength <= 10_000_000
            if page.is_tiled or not small:
                return TiffReader(path)
        except ValueError:
            raise
        except Exception as err:
            raise ValueError(f"{path}: cannot read it as a slide: {err}") from err
    try:
        return ImageReader(path)
    except Exception as err:
        raise ValueError(f"{path}: no reader opens it (OpenSlide, tifffile, image): {err}") from err


def file_mpp(path: str | os.PathLike) -> float | None:
    """Microns per pixel recorded in an image file's metadata, else None; decodes no pixels.

    TIFFs: the OME ``PhysicalSizeX/Y`` or the resolution tags; other files: OpenSlide's
    ``openslide.mpp-x/y`` if OpenSlide opens them. For ``nucseg segment``'s scale check.
    """
    path = Path(path)
    try:
        if path.suffix.lower() in _TIFF_SUFFIXES:
            with tifffile.TiffFile(path) as tif:
                ome = tif.is_ome
                if not ome:
                    return _resolution_mpp(tif.pages.first)
            with TiffReader(path) as reader:
                return reader.mpp
        import openslide

        with openslide.OpenSlide(os.fspath(path)) as slide:
            props = slide.properties
            return _mean_mpp(
                _float(props.get("openslide.mpp-x")), _float(props.get("openslide.mpp-y"))
            )
    except Exception:  # unreadable or not a slide: no mpp (reading it reports the error)
        return None


def scale_mismatch(
    image_mpp: float | None, model_mpp: float, *, tolerance: float = 0.25
) -> str | None:
    """A warning when an image's mpp differs from the model's by more than ``tolerance``.

    Examples
    --------
    >>> scale_mismatch(0.5, 0.25)[:60]
    'the image has 0.5 um/px but the model was trained at 0.25 um'
    >>> scale_mismatch(0.26, 0.25) is None
    True
    """
    if image_mpp is None or not image_mpp > 0:
        return None
    ratio = image_mpp / model_mpp
    if abs(ratio - 1) <= tolerance:
        return None
    return (
        f"the image has {image_mpp:.3g} um/px but the model was trained at {model_mpp:.3g} um/px "
        f"({ratio:.3g}x); pass --mpp if the file is wrong, or resample the image"
    )
