"""Time each stage of one slide chunk in isolation: normalisation, network (the backend's forward
passes alone, then with tiling and stitching), post-processing, finishing (measurements, polygons,
quality figures, the chunk's files).

The chunk is a 2000 x 2000 block of 4 MoNuSeg training images (all tissue, 4 Mpx), segmented
with the bundled model through :class:`nucseg.slide.engine.ChunkSegmenter` as ``nucseg slide``
does (its 8-pixel tile overlap, stain statistics fitted once, normalised directly, no colour
table); each stage is the median of ``--repeats`` runs, after one warm-up, in wall-clock
seconds and in CPU seconds of the process (``time.process_time``: core-seconds, less sensitive
to a loaded machine). ``stitch`` is ``maps`` (tiles, forward passes, stitching) less
``forward``; ``beyond_network`` adds normalise, stitch, postprocess and finish. Writes
results/slide/chunk_profile.json.

    python benchmarks/profile_chunk.py
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from nucseg import datasets
from nucseg.atomic import write_json
from nucseg.pipeline import provenance, resolve_model
from nucseg.slide.chunkio import write_chunk
from nucseg.slide.engine import ChunkSegmenter, load_predictor, predict_tissue_maps


class _Plan:
    """The parts of a SlidePlan that write_chunk reads: one chunk, its core inside the window."""

    work_mpp = mpp = 0.25
    scale = 1.0
    work_shape = (4000, 4000)
    roi_wkt = None

    def core(self, index):
        return (1064, 1064, 2936, 2936)

    def window(self, index):
        return (1000, 1000, 3000, 3000)


def chunk_setup(folder: Path, **predict: Any) -> tuple[np.ndarray, Any, ChunkSegmenter]:
    """The 2000 x 2000 block of 4 MoNuSeg training images, the model of ``folder`` as the engine
    loads it, and its chunk segmenter with stain statistics fitted on the block."""
    ids = datasets.ids("monuseg", split="train")[:4]
    crops = [datasets.load_sample("monuseg", i).image[:1000, :1000] for i in ids]
    image = np.ascontiguousarray(
        np.concatenate([np.concatenate(crops[:2], 1), np.concatenate(crops[2:], 1)], 0)
    )
    # as nucseg slide loads it: the slide's tile overlap unless one is asked
    settings = {k: v for k, v in predict.items() if v is not None}
    predictor = load_predictor(str(folder), json.dumps(settings, sort_keys=True))
    normaliser = predictor.normaliser  # None: a model that segments as scanned
    source = None if normaliser is None else normaliser.estimate(image)
    return image, predictor, ChunkSegmenter(predictor, source)


def _forward_batches(predictor: Any, image: np.ndarray, pixels: int) -> list[np.ndarray]:
    """Batches of tiles of ``image`` holding ``pixels`` pixels in all: the forward passes of one
    :func:`predict_tissue_maps` call without its tiling and stitching."""
    tile, batch = int(predictor.options["tile"]), int(predictor.options["batch_size"])
    n = max(1, pixels // (tile * tile))
    origins = [(r, c) for r in range(0, image.shape[0] - tile + 1, tile // 2)
               for c in range(0, image.shape[1] - tile + 1, tile // 2)]  # fmt: skip
    tiles = [image[r : r + tile, c : c + tile] for r, c in (origins * n)[:n]]
    return [np.stack(tiles[i : i + batch]) for i in range(0, n, batch)]


def _per_mpx(seconds: dict[str, list[float]], mpx: float) -> dict[str, float]:
    """Median seconds per megapixel of each stage, with stitch and beyond_network derived."""
    out = {name: statistics.median(v) / mpx for name, v in seconds.items()}
    out["stitch"] = max(out["maps"] - out["forward"], 0.0)
    out["beyond_network"] = sum(out[k] for k in ("normalise", "stitch", "postprocess", "finish"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backend", default=None, help="network backend (default: the model's)")
    parser.add_argument("--out", type=Path, default=Path("results/slide/chunk_profile.json"))
    args = parser.parse_args()
    folder = resolve_model(args.model)
    origin = provenance(models=[folder])
    image, predictor, segmenter = chunk_setup(folder, backend=args.backend)
    stages = {
        "normalise": lambda: segmenter.normalise(image),
        "forward": lambda: [predictor.backend.predict(b) for b in batches],
        "maps": lambda: predict_tissue_maps(predictor, normalised, tissue=image, stats=stats),
        "postprocess": lambda: predictor.maps_to_labels(maps),
        "finish": lambda: write_chunk(_Plan(), (0, 0), image, labels, Path(work)),
    }
    wall: dict[str, list[float]] = {name: [] for name in stages}
    cpu: dict[str, list[float]] = {name: [] for name in stages}
    stats: dict[str, int] = {}
    first: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as work:
        normalised = segmenter.normalise(image)
        maps = predict_tissue_maps(predictor, normalised, tissue=image, stats=first)
        batches = _forward_batches(predictor, normalised, first["network_pixels"])
        labels = predictor.maps_to_labels(maps)
        for stage in stages.values():  # warm-up
            stage()
        for _ in range(args.repeats):
            for name, stage in stages.items():
                start, start_cpu = time.perf_counter(), time.process_time()
                stage()
                cpu[name].append(time.process_time() - start_cpu)
                wall[name].append(time.perf_counter() - start)
    mpx = image.shape[0] * image.shape[1] / 1e6
    record = {
        "benchmark": "one 4 Mpx chunk, seconds per megapixel per stage (medians)",
        "backend": predictor.backend.name,
        "chunk_mpx": mpx,
        "network_pixels_per_pixel": first["network_pixels"] / (mpx * 1e6),
        "seconds_per_mpx": _per_mpx(wall, mpx),
        "cpu_seconds_per_mpx": _per_mpx(cpu, mpx),
        "runs": wall,
        "cpu_runs": cpu,
        "load": [round(v, 2) for v in os.getloadavg()],
        "nuclei": int(labels.max()),
        "provenance": origin,
    }
    for name, value in record["cpu_seconds_per_mpx"].items():
        print(f"{name:15s} {value:.3f} CPU s per Mpx ({record['seconds_per_mpx'][name]:.3f} s)")
    write_json(args.out, record, overwrite=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
