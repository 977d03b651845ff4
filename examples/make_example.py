"""Rebuild the bundled example: a 512x512 crop of a MoNuSeg breast test image and its labels.

Run from the repository root with the datasets in place (NUCSEG_DATA or ../shared/datasets):

    python examples/make_example.py

It writes examples/monuseg-breast-crop/{images,labels}/TCGA-A7-A13E-crop.png.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from skimage.segmentation import relabel_sequential

from nucseg import datasets

IMAGE_ID = "TCGA-A7-A13E-01Z-00-DX1"
ROWS, COLS = slice(256, 768), slice(256, 768)
OUT = Path(__file__).resolve().parent / "monuseg-breast-crop"


def main() -> None:
    sample = datasets.load_sample("monuseg", IMAGE_ID)
    image = sample.image[ROWS, COLS]
    labels, _, _ = relabel_sequential(sample.labels[ROWS, COLS])
    for sub in ("images", "labels"):
        (OUT / sub).mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(OUT / "images" / "TCGA-A7-A13E-crop.png", optimize=True)
    Image.fromarray(labels.astype(np.uint16)).save(OUT / "labels" / "TCGA-A7-A13E-crop.png")
    print(f"wrote {OUT}: {int(labels.max())} nuclei")


if __name__ == "__main__":
    main()
