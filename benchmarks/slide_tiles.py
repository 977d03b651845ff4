"""Network tile size and overlap for whole slides: validation AJI and network time per setting.

Larger tiles with a small overlap compute each pixel fewer times (256-pixel tiles at 25 % overlap
compute each pixel about 1.8 times; 512 at 64 pixels about 1.3 times). The model's
post-processing thresholds were tuned with its own setting, so each candidate is scored with
those same thresholds on the model's validation images (held-out non-breast MoNuSeg images, listed
in its thresholds.json, of every source it learnt from, each at the model's scale; no test
image), with the model's per-image stain normalisation if it has one. Network
seconds per 1000 x 1000 image (prediction and stitching, no post-processing) are timed in the same
run. Writes results/slide/tiles.json.

    python benchmarks/slide_tiles.py
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from nucseg import metrics
from nucseg.infer import Predictor
from nucseg.pipeline import provenance, resolve_model
from nucseg.provenance import portable_path

SETTINGS = [(256, 0.25), (256, 0.125), (256, 0.0625), (512, 0.125), (512, 0.25), (1024, 0.0625)]


def validation_images(folder: Path) -> list:
    """The model's validation samples, as its training held them out (every source's)."""
    from nucseg.train import TrainConfig
    from nucseg.training.data import validation_samples

    config = json.loads((folder / "config.json").read_text())
    return validation_samples(TrainConfig.from_dict(config))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument(
        "--settings",
        type=lambda text: [(int(t), float(o)) for t, o in (p.split("/") for p in text.split(","))],
        default=SETTINGS,
        metavar="TILE/OVERLAP,...",
        help="e.g. 256/0.25,512/0.125 (default: SETTINGS)",
    )
    parser.add_argument("--out", type=Path, default=Path("results/slide/tiles.json"))
    args = parser.parse_args()
    origin = provenance(models=[resolve_model(args.model)])
    folder = resolve_model(args.model)
    thresholds = json.loads((folder / "thresholds.json").read_text())
    samples = validation_images(folder)
    ids = [s.id for s in samples]
    if ids != thresholds["validation_images"]:
        raise SystemExit(f"{folder}: its config's validation images are not its thresholds.json's")
    rows = []
    for tile, overlap in args.settings:
        predictor = Predictor.load(folder, tile=tile, overlap=overlap)
        scores, seconds = [], []
        for sample in samples:
            start = time.perf_counter()
            maps = predictor.predict_maps(sample.image)
            seconds.append(time.perf_counter() - start)
            scores.append(metrics.aji(sample.labels, predictor.maps_to_labels(maps)))
        row = {
            "tile": tile,
            "overlap": overlap,
            "validation_aji": float(np.mean(scores)),
            "per_image_aji": dict(zip(ids, scores, strict=True)),
            "per_source_aji": {
                name: float(
                    np.mean([a for a, s in zip(scores, samples, strict=True) if s.dataset == name])
                )
                for name in dict.fromkeys(s.dataset for s in samples)
            },  # fmt: skip
            "network_seconds_per_image": float(np.mean(seconds)),
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    record = {
        "benchmark": "validation AJI and network time per prediction tile setting",
        "model": portable_path(folder),
        "postprocess": thresholds["params"],
        "settings": rows,
        "load_average": [round(v, 2) for v in os.getloadavg()],
        **origin,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
