"""Validation AJI and time of a model's prediction settings (tile, overlap, TTA).

For each setting, predicts the run's validation images (held-out non-breast MoNuSeg images: no
test image is used), tunes the post-processing on them as ``nucseg tune`` does, and records the
best validation AJI and the seconds per image of the network. This is how the shipped settings
were chosen (speed target 1.5 s per 1000 x 1000 image on 2 cores, TrainConfig.predict_*).

    python benchmarks/predict_settings.py runs/default --out results/unet/predict_settings.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from nucseg import datasets
from nucseg.atomic import write_json
from nucseg.infer import predict_maps
from nucseg.models import load_model
from nucseg.pipeline import provenance
from nucseg.postprocess import tune_watershed
from nucseg.stain import StainNormalizer
from nucseg.train import WATERSHED_GRID, TrainConfig, split_ids

SETTINGS = [  # (tile, overlap, tta)
    (256, 0.5, "flips"),
    (256, 0.5, "none"),
    (256, 0.25, "flips"),
    (256, 0.25, "none"),
    (512, 0.25, "none"),
    (1024, 0.125, "none"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="run folder (or bundled model folder)")
    parser.add_argument("--out", type=Path, default=Path("results/unet/predict_settings.json"))
    args = parser.parse_args()
    origin = provenance(models=[args.run])
    config = TrainConfig.from_dict(json.loads((args.run / "config.json").read_text()))
    normaliser = StainNormalizer.from_dict(json.loads((args.run / "normaliser.json").read_text()))
    model = load_model(args.run / "model.safetensors")
    val = []
    for image_id in sorted(split_ids(config)[1]):
        sample = datasets.load_sample(config.dataset, image_id)
        val.append((image_id, normaliser.transform(sample.image), sample.labels))
    rows = []
    for tile, overlap, tta in SETTINGS:
        maps, seconds = [], []
        for _, image, _ in val:
            start = time.perf_counter()
            maps.append(predict_maps(model, image, num_classes=3, tile=tile, overlap=overlap,
                                     tta=tta)[..., :3])  # fmt: skip
            seconds.append(time.perf_counter() - start)
        params, table = tune_watershed(maps, [v[2] for v in val], grid=WATERSHED_GRID)
        best = max(row["aji"] for row in table)
        network = float(np.median(seconds))
        rows.append({"tile": tile, "overlap": overlap, "tta": tta, "validation_aji": best,
                     "params": params, "network_seconds_per_image": network})  # fmt: skip
        print(
            f"tile {tile}, overlap {overlap}, tta {tta}: validation AJI {best:.4f}, "
            f"network {np.median(seconds):.2f} s per image"
        )
    record = {"run": str(args.run), "validation_images": [v[0] for v in val], "settings": rows,
              "load_average_1min": round(os.getloadavg()[0], 2), "provenance": origin}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, record, overwrite=True)


if __name__ == "__main__":
    main()
