"""Whole-slide images: read pyramidal slides, find tissue, segment in chunks, write streaming.

``segment_slide(path, out_dir, **options)`` (see :func:`nucseg.slide.run.segment_slide`) is the
Python entry point; ``nucseg slide`` the command. Modules, one job each: :mod:`.reader`
(OpenSlide, tifffile and plain images behind one interface), :mod:`.tissue` (overview, tissue
mask, regions of interest), :mod:`.engine` (the plan and the per-chunk work), :mod:`.chunkio`
(one chunk's files), :mod:`.writers` (Parquet, GeoJSON, label OME-TIFF, overlay) and
:mod:`.synthetic` (pyramidal test slides).
"""

from __future__ import annotations

from typing import Any

__all__ = ["open_slide", "segment_slide"]


def segment_slide(path: Any, out_dir: Any, **options: Any) -> dict[str, Any]:
    """Segment a whole slide; see :func:`nucseg.slide.run.segment_slide`."""
    from nucseg.slide.run import segment_slide as run

    return run(path, out_dir, **options)


def open_slide(path: Any) -> Any:
    """Open a slide; see :func:`nucseg.slide.reader.open_slide`."""
    from nucseg.slide.reader import open_slide as open_

    return open_(path)
