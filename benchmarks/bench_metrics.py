"""Time :func:`nucseg.metrics.evaluate_image` on a 1000 x 1000 image with about 500 nuclei.

Uses the real MoNuSeg labels of TCGA-18-5592-01Z-00-DX1 (480 nuclei) when present under
``$NUCSEG_DATA/monuseg/labels`` (default ``../shared/datasets``), else 500 random discs; the
prediction is a perturbed copy (shifted, dilated, part eroded, dropped, merged, false positives,
relabelled). Single thread. Target: < 0.1 s per image.

Usage: ``python benchmarks/bench_metrics.py [--out results/benchmarks/metrics.json] [--repeats 15]``
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy is imported

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from scipy import ndimage as ndi  # noqa: E402

from nucseg.metrics import evaluate_image  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
IMAGE_ID = "TCGA-18-5592-01Z-00-DX1"
TARGET_S = 0.1
log = logging.getLogger("bench_metrics")


def real_labels() -> np.ndarray | None:
    """The real label image, or None when the dataset is absent."""
    data = Path(os.environ.get("NUCSEG_DATA", ROOT.parent / "shared" / "datasets"))
    path = data / "monuseg" / "labels" / f"{IMAGE_ID}.png"
    if not path.is_file():
        return None
    from PIL import Image

    return np.asarray(Image.open(path)).astype(np.int32)


def random_discs(rng: np.random.Generator, *, shape=(1000, 1000), n=500) -> np.ndarray:
    """``n`` discs of radius 6-12 px at random centres (later ones cover earlier ones)."""
    labels = np.zeros(shape, dtype=np.int32)
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    for label in range(1, n + 1):
        r0, c0 = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        radius = rng.uniform(6, 12)
        r_lo, r_hi = max(r0 - 13, 0), min(r0 + 14, shape[0])
        c_lo, c_hi = max(c0 - 13, 0), min(c0 + 14, shape[1])
        disc = (rows[r_lo:r_hi] - r0) ** 2 + (cols[:, c_lo:c_hi] - c0) ** 2 <= radius**2
        labels[r_lo:r_hi, c_lo:c_hi][disc] = label
    return labels


def perturb(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A plausible prediction: shift, dilate, erode half, drop 5 %, merge 5 %, add 20 FPs."""
    n = int(labels.max())
    pred = ndi.grey_dilation(np.roll(labels, (2, -1), axis=(0, 1)), size=3)
    edge = ndi.grey_erosion(pred, size=3) != ndi.grey_dilation(pred, size=3)
    pred[edge & (pred % 2 == 1)] = 0  # erode the odd labels
    lut = np.arange(n + 1)
    lut[rng.choice(np.arange(1, n + 1), size=n // 20, replace=False)] = 0  # drop
    merged = rng.choice(np.arange(2, n + 1), size=n // 20, replace=False)
    lut[merged] = lut[merged - 1]  # merge with the previous label (often a neighbour)
    pred = lut[pred]
    fps = random_discs(rng, shape=labels.shape, n=20)
    pred = np.where((pred == 0) & (fps > 0), fps + n, pred)
    new = rng.permutation(2 * n + 41)[: 2 * n + 21] * 3 + 7  # shuffled, non-consecutive values
    new[0] = 0
    return new[pred].astype(np.int32)


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
    parser.add_argument("--out", type=Path, default=ROOT / "results/benchmarks/metrics.json")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    rng = np.random.default_rng(0)
    y_true = real_labels()
    source = f"monuseg/labels/{IMAGE_ID}.png"
    if y_true is None:
        y_true, source = random_discs(rng), "500 random discs (seed 0)"
    y_pred = perturb(y_true, rng)
    scores = evaluate_image(y_true, y_pred)  # warm-up
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        evaluate_image(y_true, y_pred)
        times.append(time.perf_counter() - start)
    median = float(np.median(times))
    result = {
        "benchmark": "nucseg.metrics.evaluate_image",
        "input": source,
        "shape": list(y_true.shape),
        "n_true": scores["n_true"],
        "n_pred": scores["n_pred"],
        "aji": scores["aji"],
        "repeats": args.repeats,
        "median_s": median,
        "min_s": float(np.min(times)),
        "max_s": float(np.max(times)),
        "target_s": TARGET_S,
        "meets_target": median < TARGET_S,
        "threads": 1,
        "machine": {
            "processor": platform.processor(),
            "cpu_model": cpu_model(),
            "machine": platform.machine(),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "load_average_1min": round(os.getloadavg()[0], 2),
            "python": platform.python_version(),
            "numpy": np.__version__,
        },
        "commit": git_commit(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    log.info(
        "evaluate_image on %s (%d true, %d predicted): median %.1f ms of %d runs (target %.0f ms)",
        source, scores["n_true"], scores["n_pred"], 1e3 * median, args.repeats, 1e3 * TARGET_S,
    )  # fmt: skip
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
