"""Time :class:`nucseg.augment.Augmenter` per 256 x 256 tile: each operation alone, and in full.

Tiles are random 256 x 256 crops of the real MoNuSeg image TCGA-A7-A13E-01Z-00-DX1 and its
labels when present under ``$NUCSEG_DATA`` (default ``../shared/datasets``), else synthetic
discs. Every call augments an image, its int32 labels and a float32 weight map (a stand-in: its
values do not change the cost). Each case runs on every tile after a warm-up; the per-tile
median, mean and 95th percentile are reported. "alone" rows run one operation at probability 1;
"expected" is its default probability times its cost above the "none" row (validation and
overhead only). Single thread (OpenCV and BLAS). The cases run in ``--passes`` interleaved passes
and each reports its pass with the lowest mean, to damp interference from other processes (the
load average is recorded). Target: mean of the default pipeline < 5 ms.

Usage: ``python benchmarks/bench_augment.py [--out results/benchmarks/augment.json] [--tiles 200]
[--passes 3]``
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy is imported

import argparse  # noqa: E402
import logging  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from nucseg.atomic import write_json  # noqa: E402
from nucseg.augment import COLOUR_OPS, GEOMETRIC_OPS, A, AugmentConfig, Augmenter  # noqa: E402
from nucseg.provenance import provenance  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
IMAGE_ID = "TCGA-A7-A13E-01Z-00-DX1"
TILE = 256
TARGET_MS = 5.0
log = logging.getLogger("bench_augment")


def load_tiles(n: int, rng: np.random.Generator) -> tuple[list[tuple[np.ndarray, ...]], str]:
    """``n`` random (image, labels, weight map) tiles, and where they come from."""
    try:
        from nucseg import datasets

        sample = datasets.load_sample("monuseg", IMAGE_ID)
        image, labels, source = sample.image, sample.labels, f"monuseg/{IMAGE_ID}"
    except (FileNotFoundError, KeyError, ValueError, OSError) as err:
        log.info("MoNuSeg sample unavailable (%s): synthetic tiles", err)
        image, labels = synthetic(rng)
        source = "synthetic discs (seed 0)"
    tiles = []
    for _ in range(n):
        r = rng.integers(0, image.shape[0] - TILE + 1)
        c = rng.integers(0, image.shape[1] - TILE + 1)
        tile_labels = np.ascontiguousarray(labels[r : r + TILE, c : c + TILE], dtype=np.int32)
        weights = (1.0 + 4.0 * (tile_labels > 0)).astype(np.float32)
        tiles.append(
            (np.ascontiguousarray(image[r : r + TILE, c : c + TILE]), tile_labels, weights)
        )
    return tiles, source


def synthetic(rng: np.random.Generator, size: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """A pink image with 400 purple discs, and their labels."""
    labels = np.zeros((size, size), np.int32)
    for label in range(1, 401):
        centre = (int(rng.integers(0, size)), int(rng.integers(0, size)))
        cv2.circle(labels, centre, int(rng.integers(5, 12)), label, -1)
    image = np.where(labels[..., None] > 0, (90, 60, 150), (230, 170, 210)).astype(np.uint8)
    noise = rng.integers(-20, 21, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8), labels


def time_case(config: AugmentConfig, tiles: list, *, warmup: int = 10) -> np.ndarray:
    """Seconds per tile of ``Augmenter(config)`` over ``tiles``."""
    aug = Augmenter(config, seed=0)
    for image, labels, weights in tiles[:warmup]:
        aug(image, labels, weights)
    times = np.empty(len(tiles))
    for i, (image, labels, weights) in enumerate(tiles):
        start = time.perf_counter()
        aug(image, labels, weights)
        times[i] = time.perf_counter() - start
    return times


def cpu_model() -> str | None:
    """The CPU's model name from /proc/cpuinfo (Linux), else None."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def git_commit() -> str | None:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=ROOT
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "results/benchmarks/augment.json")
    parser.add_argument("--tiles", type=int, default=200)
    parser.add_argument("--passes", type=int, default=3)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cv2.setNumThreads(1)
    load_before = os.getloadavg()

    tiles, source = load_tiles(args.tiles, np.random.default_rng(0))
    default = AugmentConfig()
    cases = {"none": default.only()}
    cases |= {op: default.only(op) for op in GEOMETRIC_OPS + COLOUR_OPS}
    cases |= {"paper": AugmentConfig.paper(), "default": default}
    cases["default+elastic0.1"] = replace(default, p_elastic=0.1)
    rows, pass_means = {}, {name: [] for name in cases}
    for _ in range(args.passes):
        for name, config in cases.items():
            ms = 1e3 * time_case(config, tiles)
            pass_means[name].append(float(ms.mean()))
            if name not in rows or ms.mean() < rows[name]["mean_ms"]:
                rows[name] = {
                    "median_ms": float(np.median(ms)),
                    "mean_ms": float(ms.mean()),
                    "p95_ms": float(np.percentile(ms, 95)),
                }
    for name, means in pass_means.items():
        rows[name]["pass_means_ms"] = means
    overhead = rows["none"]["median_ms"]
    for op in GEOMETRIC_OPS + COLOUR_OPS:
        p = getattr(default, f"p_{op}")
        rows[op] |= {"default_p": p, "expected_ms": p * (rows[op]["median_ms"] - overhead)}

    log.info("Augmenter on %d tiles of %dx%d from %s, one thread, best of %d passes",
             len(tiles), TILE, TILE, source, args.passes)  # fmt: skip
    log.info("%-20s %9s %9s %9s %10s %11s", "case", "median ms", "mean ms", "p95 ms", "default p",
             "expected ms")  # fmt: skip
    for name, row in rows.items():
        p = f"{row['default_p']:.2f}" if "default_p" in row else ""
        expected = f"{row['expected_ms']:.3f}" if "expected_ms" in row else ""
        log.info("%-20s %9.3f %9.3f %9.3f %10s %11s", name, row["median_ms"], row["mean_ms"],
                 row["p95_ms"], p, expected)  # fmt: skip
    total = rows["default"]["mean_ms"]
    log.info("default pipeline: mean %.2f ms per tile (target < %.0f ms): %s", total, TARGET_MS,
             "met" if total < TARGET_MS else "NOT met")  # fmt: skip

    result = {
        "benchmark": "nucseg.augment.Augmenter",
        "input": source,
        "tile": [TILE, TILE],
        "tiles": len(tiles),
        "passes": args.passes,
        "targets": "image (uint8 RGB) + labels (int32) + weight map (float32)",
        "cases": rows,
        "default_config": default.to_dict(),
        "target_mean_ms": TARGET_MS,
        "meets_target": total < TARGET_MS,
        "threads": 1,
        "machine": {
            "processor": platform.processor(),
            "cpu_model": cpu_model(),
            "machine": platform.machine(),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "opencv": cv2.__version__,
            "albumentations": A.__version__,
        },
        "commit": git_commit(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result["provenance"] = provenance()
    write_json(args.out, result, overwrite=True, indent=2)
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
