"""Time ``nucseg segment`` per 1000x1000 image, start-up excluded.

Runs the command on 1 image and on 5 images (MoNuSeg breast images, 1000 x 1000) and reports
``(t5 - t1) / 4``: the cost of one more image, without Python, torch and model start-up. Each
timing is the median of three runs. Writes JSON with the machine, load and commit.

    python benchmarks/bench_segment.py                      # the default (bundled) model
    python benchmarks/bench_segment.py --model runs/default --out results/unet/speed.json
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nucseg import datasets
from nucseg.atomic import write_json
from nucseg.pipeline import provenance, resolve_model


def run_segment(images: list[Path], extra: list[str]) -> float:
    """Wall-clock seconds of one ``nucseg segment`` run over ``images``."""
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "nucseg.cli", "segment", *map(str, images), "--out", out]
        start = time.perf_counter()
        subprocess.run(command + extra, check=True, capture_output=True)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model folder or bundled name (default: nucseg's default)")
    parser.add_argument("--method", help="a classical method instead of a model")
    parser.add_argument("--param", action="append", default=[], help="KEY=VALUE, passed on")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("results/unet/speed.json"))
    args = parser.parse_args()
    extra = [f"--param={p}" for p in args.param]
    extra += ["--model", args.model] if args.model else []
    extra += ["--method", args.method] if args.method else []
    model = None if args.method else resolve_model(args.model or "default")
    origin = provenance(models=[model] if model is not None else [])
    root = datasets.data_root() / "monuseg" / "images"
    images = [root / f"{i}.tif" for i in datasets.ids("monuseg", split="test")[:5]]
    t1 = statistics.median(run_segment(images[:1], extra) for _ in range(args.repeats))
    t5 = statistics.median(run_segment(images, extra) for _ in range(args.repeats))
    per_image = (t5 - t1) / 4
    print(f"1 image: {t1:.2f} s, 5 images: {t5:.2f} s -> {per_image:.2f} s per extra image")
    record = {
        "benchmark": "nucseg segment, seconds per 1000x1000 image, start-up excluded",
        "t1_s": t1,
        "t5_s": t5,
        "per_image_s": per_image,
        "target_s": 1.5,
        "images": [p.name for p in images],
        "options": extra,
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "load_average_1min": round(os.getloadavg()[0], 2)},
        "provenance": origin,
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, record, overwrite=True)


if __name__ == "__main__":
    main()
