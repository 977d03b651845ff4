"""A small slide run for the viewer and report tests: dark disks on pink tissue, one flagged chunk.

The segmenter labels dark pixels (exact on these disks), so every nucleus and its outline are
known; a dark 200 x 200 block in chunk r0003_c0000 becomes one nucleus far larger than any
training nucleus, which the chunk quality check flags.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

SIZE, CHUNK, RADIUS = 1024, 256, 9
BLOCK = (slice(800, 1000), slice(30, 230))  # rows, cols of the dark block (chunk r0003_c0000)


def threshold_segmenter(image: np.ndarray) -> np.ndarray:
    """Dark pixels, 4-connected components."""
    return ndi.label(image.mean(axis=2) < 128)[0].astype(np.int32)


def centres() -> list[tuple[int, int]]:
    """Disk centres (row, col) on a 40-pixel grid, some across chunk seams, none in the block."""
    out = []
    for r in range(30, SIZE - 20, 40):
        for c in range(30, SIZE - 20, 40):
            if not (760 <= r <= 1024 and c <= 260):
                out.append((r, c))
    return out


def slide_image() -> np.ndarray:
    rows, cols = np.mgrid[:SIZE, :SIZE]
    image = np.empty((SIZE, SIZE, 3), dtype=np.uint8)
    image[:] = (225, 170, 215)
    dark = np.zeros((SIZE, SIZE), dtype=bool)
    for r, c in centres():
        dark |= (rows - r) ** 2 + (cols - c) ** 2 <= RADIUS**2
    dark[BLOCK] = True
    image[dark] = (60, 30, 120)
    return image


def make_run(folder: Path) -> Path:
    """Write the slide and segment it into ``folder/out/disks/``; returns that folder."""
    from nucseg.slide import segment_slide
    from nucseg.slide.synthetic import write_slide

    image = slide_image()
    path = write_slide(folder / "disks.tif", image.shape[:2], image, mpp=0.25, compression="zlib")
    segment_slide(path, folder / "out", segmenter=threshold_segmenter, chunk=CHUNK,
                  progress=False)  # fmt: skip
    return folder / "out" / "disks"
