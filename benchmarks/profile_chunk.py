"""Time each stage of one slide chunk in isolation: normalisation, network, post-processing,
finishing (measurements, polygons, quality figures, the chunk's files).

The chunk is a 2000 x 2000 block of 4 MoNuSeg training images (all tissue, 4 Mpx), segmented
with the bundled model through :class:`nucseg.slide.engine.ChunkSegmenter` as ``nucseg slide``
does (stain statistics fitted once, normalised directly, no colour table); each stage is the
median of ``--repeats`` runs, after one warm-up. Writes results/slide/chunk_profile.json.

    python benchmarks/profile_chunk.py
"""

from __future__ import annotations

import argparse
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
from nucseg.slide.engine import ChunkSegmenter, engine_predictor, predict_tissue_maps


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


def chunk_setup(folder: Path) -> tuple[np.ndarray, Any, ChunkSegmenter]:
    """The 2000 x 2000 block of 4 MoNuSeg training images, the model of ``folder`` as the engine
    loads it, and its chunk segmenter with stain statistics fitted on the block."""
    ids = datasets.ids("monuseg", split="train")[:4]
    crops = [datasets.load_sample("monuseg", i).image[:1000, :1000] for i in ids]
    image = np.ascontiguousarray(
        np.concatenate([np.concatenate(crops[:2], 1), np.concatenate(crops[2:], 1)], 0)
    )
    predictor = engine_predictor(folder)
    return image, predictor, ChunkSegmenter(predictor, predictor.normaliser.estimate(image))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("results/slide/chunk_profile.json"))
    args = parser.parse_args()
    folder = resolve_model(args.model)
    origin = provenance(models=[folder])
    image, predictor, segmenter = chunk_setup(folder)
    stages = {
        "normalise": lambda: segmenter.normalise(image),
        "network": lambda: predict_tissue_maps(predictor, normalised, tissue=image),
        "postprocess": lambda: predictor.maps_to_labels(maps),
        "finish": lambda: write_chunk(_Plan(), (0, 0), image, labels, Path(work)),
    }
    seconds: dict[str, list[float]] = {name: [] for name in stages}
    with tempfile.TemporaryDirectory() as work:
        normalised = segmenter.normalise(image)
        maps = predict_tissue_maps(predictor, normalised, tissue=image)
        labels = predictor.maps_to_labels(maps)
        for stage in stages.values():  # warm-up
            stage()
        for _ in range(args.repeats):
            for name, stage in stages.items():
                start = time.perf_counter()
                stage()
                seconds[name].append(time.perf_counter() - start)
    mpx = image.shape[0] * image.shape[1] / 1e6
    per_mpx = {name: statistics.median(v) / mpx for name, v in seconds.items()}
    for name, value in per_mpx.items():
        print(f"{name:12s} {value:.3f} s per Mpx")
    record = {
        "benchmark": "one 4 Mpx chunk, seconds per megapixel per stage (medians)",
        "chunk_mpx": mpx,
        "seconds_per_mpx": per_mpx,
        "runs": seconds,
        "nuclei": int(labels.max()),
        "provenance": origin,
    }
    write_json(args.out, record, overwrite=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
