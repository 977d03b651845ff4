"""Whole-slide benchmark: memory and throughput of ``nucseg slide`` against the network's limit.

Builds two synthetic pyramidal 40x slides (tiled JPEG TIFF, mpp 0.25 in the resolution tags,
4 levels): the same block of MoNuSeg non-breast training images (``--images``, mosaicked with
48-pixel gaps) on a white background of about 0.1 Gpx ("small") and about 1 Gpx ("large",
mostly background). Then, in the same run:

- each slide through ``nucseg slide`` in its own process (peak RSS from its report, which reads
  ``getrusage`` in that process), with its tissue throughput: level-0 megapixels of the tissue
  mask per second of the whole run (model loading and output writing included), and per second
  of the chunk phase;
- the network's forward-only throughput: batches of non-overlapping tiles of the slide run's tile
  size, no stitching, no post-processing (the limit);
- ``nucseg segment`` on 1000x1000 images (MPx/s from the cost of 4 more images, start-up
  excluded), with the model's own prediction settings.

Writes results/slide/bench.json with the machine load (``uptime``) before and after.

    python benchmarks/bench_slide.py
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _segment_timing import run_segment

from nucseg import datasets
from nucseg.pipeline import provenance
from nucseg.slide.synthetic import mosaic_region, write_slide

SIZES = {"small": (10240, 10240), "large": (32768, 32768)}


def load_average() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def build_slides(folder: Path, n_images: int) -> dict[str, Path]:
    """The two slides, with the same image block at the same place (chunk-aligned)."""
    samples = list(datasets.load("monuseg", split="train"))[:n_images]
    per_row = 4
    gap = 48
    origins = [
        (2048 + (k // per_row) * (1000 + gap), 2048 + (k % per_row) * (1000 + gap))
        for k in range(len(samples))
    ]
    region = mosaic_region([s.image for s in samples], origins)
    paths = {}
    for name, shape in SIZES.items():
        start = time.perf_counter()
        paths[name] = write_slide(folder / f"{name}.tif", shape, region, mpp=0.25, levels=4)
        print(f"wrote {name} slide {shape} in {time.perf_counter() - start:.0f} s", flush=True)
    return paths


def run_slide(path: Path, out: Path, extra: list[str]) -> dict:
    command = [sys.executable, "-m", "nucseg.cli", "slide", str(path), "--out", str(out),
               "--no-progress", *extra]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(command, check=True)
    wall = time.perf_counter() - start
    report = json.loads((out / path.stem / "report.json").read_text())
    mpx = report["tissue_mpx"]  # level-0 megapixels of the tissue mask
    return {
        "dimensions": report["dimensions"],
        "chunks": report["chunks"],
        "nuclei": report["nuclei"],
        "tissue_mm2": report["tissue_mm2"],
        "tissue_mpx": mpx,
        "chunk_mpx": report["chunk_mpx"],
        "wall_s": wall,
        "report_seconds": report["seconds"],
        "times": report["times"],
        "peak_rss_mb": report["peak_rss_mb"],
        "mpx_per_s": mpx / report["seconds"],
        "mpx_per_s_chunks": mpx / report["times"]["chunks_s"],
        "predict": report["predict"],
    }


def forward_throughput(model: str, tile: int, batch: int, seconds: float = 20.0) -> dict:
    """Level-0 MPx/s of the network alone on batches of non-overlapping tiles."""
    import torch

    from nucseg.infer import Predictor, autocast, input_stats, to_tensor
    from nucseg.pipeline import resolve_model

    predictor = Predictor.load(resolve_model(model))
    images = [s.image for s in datasets.load("monuseg", split="train")][:4]
    tiles = []
    for image in images:
        for r in range(0, image.shape[0] - tile + 1, tile):
            for c in range(0, image.shape[1] - tile + 1, tile):
                tiles.append(image[r : r + tile, c : c + tile])
    if not tiles:  # tiles larger than the images: reflect-pad one image
        tiles = [np.pad(images[0], ((0, tile - 1000), (0, tile - 1000), (0, 0)), mode="reflect")]
    mean, std = input_stats(predictor.model)
    pixels, elapsed, k = 0, 0.0, 0
    with torch.inference_mode(), autocast(predictor.device, "auto"):
        predictor.model(to_tensor(np.stack(tiles[:batch]), predictor.device, mean=mean, std=std))
        while elapsed < seconds:
            chosen = [tiles[(k + i) % len(tiles)] for i in range(batch)]
            k += batch
            start = time.perf_counter()
            x = to_tensor(np.stack(chosen), predictor.device, mean=mean, std=std)
            predictor.model(x).float()
            elapsed += time.perf_counter() - start
            pixels += batch * tile * tile
    return {"tile": tile, "batch": batch, "mpx_per_s": pixels / 1e6 / elapsed, "seconds": elapsed}


def segment_throughput(extra: list[str]) -> dict:
    """``nucseg segment`` MPx/s from (t5 - t1) / 4 on 1000x1000 MoNuSeg breast images."""
    root = datasets.data_root() / "monuseg" / "images"
    images = [str(root / f"{i}.tif") for i in datasets.ids("monuseg", split="test")[:5]]
    runs: dict[int, list[float]] = {1: [], 5: []}
    for _ in range(3):  # the median of three runs of each: one run alone varies by a second
        for n in (1, 5):
            runs[n].append(run_segment(images[:n], extra))
    times = {n: statistics.median(v) for n, v in runs.items()}
    per_image = (times[5] - times[1]) / 4
    return {
        "t1_s": times[1],
        "t5_s": times[5],
        "per_image_s": per_image,
        "mpx_per_s": 1.0 / per_image,
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--images", type=int, default=12, help="training images in the block")
    parser.add_argument("--tile", type=int, default=None, help="network tile of the slide runs")
    parser.add_argument("--overlap", type=float, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("results/slide/bench.json"))
    args = parser.parse_args()
    from nucseg.pipeline import resolve_model

    origin = provenance(models=[resolve_model(args.model)])
    record = {"benchmark": "nucseg slide: memory and throughput", "load_before": load_average()}
    extra = ["--model", args.model]
    for flag, value in (("--tile", args.tile), ("--overlap", args.overlap),
                        ("--batch-size", args.batch_size)):  # fmt: skip
        if value is not None:
            extra += [flag, str(value)]
    with tempfile.TemporaryDirectory() as tmp:
        slides = build_slides(Path(tmp), args.images)
        runs = {}
        for name, path in slides.items():
            runs[name] = run_slide(path, Path(tmp) / "out", extra)
            print(name, json.dumps(runs[name]), flush=True)
    predict = runs["small"]["predict"]
    forward = forward_throughput(args.model, predict["tile"], predict["batch_size"])
    print("forward", forward, flush=True)
    segment = segment_throughput(["--model", args.model])
    print("segment", segment, flush=True)
    small, large = runs["small"], runs["large"]
    record.update(
        slides=runs,
        forward_only=forward,
        segment=segment,
        memory_ratio_large_small=large["peak_rss_mb"] / small["peak_rss_mb"],
        slide_vs_forward=small["mpx_per_s"] / forward["mpx_per_s"],
        slide_chunks_vs_forward=small["mpx_per_s_chunks"] / forward["mpx_per_s"],
        slide_vs_segment=small["mpx_per_s"] / segment["mpx_per_s"],
        load_after=load_average(),
        **origin,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
