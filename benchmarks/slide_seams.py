"""Seams check: the 8 MoNuSeg breast images as one slide, segmented by ``nucseg slide``.

The 8 test images (1000 x 1000, 40x) are mosaicked on a white canvas (2 rows of 4, ``--gap``
pixels of white between and around them) into a pyramidal tiled TIFF with mpp 0.25, so that
chunk seams (every ``--chunk`` pixels) cross several images. ``nucseg slide`` segments it, the
label image is cut back per image and scored against the ground truth; the mean per-image AJI is
compared with that of ``nucseg evaluate --dataset monuseg-breast`` with the same model, run in
the same process. Writes results/slide/seams.json.

    python benchmarks/slide_seams.py
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

from nucseg import datasets, metrics
from nucseg.pipeline import evaluate, make_segmenter, provenance
from nucseg.slide.synthetic import mosaic_region, write_slide


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument(  # smaller than nucseg slide's default, so seams cross most images
        "--chunk", type=int, default=2160
    )
    parser.add_argument("--halo", type=int, default=128)
    parser.add_argument("--gap", type=int, default=256)
    parser.add_argument("--out", type=Path, default=Path("results/slide/seams.json"))
    args = parser.parse_args()
    from nucseg.pipeline import resolve_model

    origin = provenance(models=[resolve_model(args.model)])
    samples = list(datasets.load("monuseg", split="test"))
    gap, side = args.gap, 1000
    origins = [(gap + (k // 4) * (side + gap), gap + (k % 4) * (side + gap)) for k in range(8)]
    shape = (gap + 2 * (side + gap), gap + 4 * (side + gap))
    with tempfile.TemporaryDirectory() as tmp:
        slide = Path(tmp) / "breast_mosaic.tif"
        write_slide(slide, shape, mosaic_region([s.image for s in samples], origins), mpp=0.25)
        command = [sys.executable, "-m", "nucseg.cli", "slide", str(slide), "--out", tmp,
                   "--model", args.model, "--chunk", str(args.chunk), "--halo", str(args.halo),
                   "--no-progress"]  # fmt: skip
        start = time.perf_counter()
        subprocess.run(command, check=True)
        slide_s = time.perf_counter() - start
        report = json.loads((Path(tmp) / "breast_mosaic" / "report.json").read_text())
        labels = tifffile.imread(Path(tmp) / "breast_mosaic" / "labels.ome.tif", level=0)
    per_image = {}
    for (image_id, _, truth), (r, c) in zip(samples, origins, strict=True):
        per_image[image_id] = metrics.aji(truth, labels[r : r + side, c : c + side])
    segmenter = make_segmenter(model=args.model)
    result = evaluate(segmenter, samples, progress=False)
    evaluated = {k: v["aji"] for k, v in result["per_image"].items()}
    slide_aji, eval_aji = float(np.mean(list(per_image.values()))), float(result["aji"])
    print(f"slide mosaic AJI {slide_aji:.4f}, nucseg evaluate AJI {eval_aji:.4f}, "
          f"difference {slide_aji - eval_aji:+.4f}")  # fmt: skip
    record = {
        "benchmark": "MoNuSeg breast mosaic through nucseg slide vs nucseg evaluate",
        "mosaic_shape": list(shape),
        "chunk": args.chunk,
        "halo": args.halo,
        "gap": gap,
        "slide_mean_aji": slide_aji,
        "evaluate_mean_aji": eval_aji,
        "difference": slide_aji - eval_aji,
        "within_0.005": bool(abs(slide_aji - eval_aji) <= 0.005),
        "per_image": {k: {"slide": per_image[k], "evaluate": evaluated[k]} for k in per_image},
        "slide_seconds": slide_s,
        "slide_report": {
            k: report[k] for k in ("nuclei", "chunks", "cut_nuclei", "stain", "predict", "model")
        },
        **origin,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
