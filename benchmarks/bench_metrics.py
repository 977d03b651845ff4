"""Time :func:`nucseg.metrics.evaluate_image` on a 1000 x 1000 image, or on a 4000 x 4000 region.

Default: the real MoNuSeg labels of TCGA-18-5592-01Z-00-DX1 (480 nuclei) when present under
``$NUCSEG_DATA/monuseg/labels`` (default ``../shared/datasets``), else 500 random discs. Target:
< 0.1 s per image. ``--large``: 8,000 random discs (seed 0) on 4000 x 4000 pixels, evaluated in a
fresh child process whose peak resident memory (``resource.getrusage``: Python, the two label
images and the evaluation) is recorded. Targets: < 10 s and < 2 GB. In both, the prediction is a
perturbed copy (shifted, dilated, part eroded, dropped, merged, false positives, relabelled), and
everything runs on one thread. The JSON records :func:`nucseg.provenance.provenance`.

Usage: ``python benchmarks/bench_metrics.py [--large] [--out FILE] [--repeats N]``
(defaults: ``results/benchmarks/metrics.json`` and 15 repeats, or with ``--large``
``results/benchmarks/metrics_large.json`` and 3 repeats)
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy is imported

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from scipy import ndimage as ndi  # noqa: E402

from nucseg.atomic import atomic_write  # noqa: E402
from nucseg.metrics import evaluate_image  # noqa: E402
from nucseg.provenance import provenance  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
IMAGE_ID = "TCGA-18-5592-01Z-00-DX1"
TARGET_S = 0.1
LARGE_SHAPE, LARGE_NUCLEI = (4000, 4000), 8000
LARGE_TARGET_S, LARGE_TARGET_RSS_MB = 10.0, 2048.0
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


def time_runs(y_true: np.ndarray, y_pred: np.ndarray, repeats: int) -> tuple[dict, list[float]]:
    """Scores of one warm-up run, and the seconds of ``repeats`` further runs."""
    scores = evaluate_image(y_true, y_pred)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        evaluate_image(y_true, y_pred)
        times.append(time.perf_counter() - start)
    return scores, times


def child(pair: Path, repeats: int) -> int:
    """Load a label pair, time it, print scores, times and this process's peak RSS as JSON."""
    with np.load(pair) as data:
        y_true, y_pred = data["y_true"], data["y_pred"]
    scores, times = time_runs(y_true, y_pred, repeats)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"scores": scores, "times": times, "peak_rss_mb": peak_mb}))
    return 0


def run_large(repeats: int) -> dict:
    """The 4000 x 4000 pair, timed in a child process that measures its own peak memory."""
    rng = np.random.default_rng(0)
    y_true = random_discs(rng, shape=LARGE_SHAPE, n=LARGE_NUCLEI)
    y_pred = perturb(y_true, rng)
    with tempfile.TemporaryDirectory() as tmp:
        pair = Path(tmp) / "pair.npz"
        np.savez(pair, y_true=y_true, y_pred=y_pred)
        del y_true, y_pred
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(pair), "--repeats", str(repeats)],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
    result = json.loads(out)
    rows, cols = LARGE_SHAPE
    result["source"] = f"{LARGE_NUCLEI} random discs on {rows} x {cols} pixels (seed 0)"
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", action="store_true", help="4000 x 4000, 8,000 nuclei")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.child is not None:
        return child(args.child, args.repeats)
    repeats = args.repeats or (3 if args.large else 15)
    name = "metrics_large.json" if args.large else "metrics.json"
    out_path = args.out or ROOT / "results" / "benchmarks" / name
    record = provenance(["python", *sys.argv] if argv is None else ["python", __file__, *argv])

    extra = {}
    if args.large:
        run = run_large(repeats)
        scores, times, source = run["scores"], run["times"], run["source"]
        shape, target_s = list(LARGE_SHAPE), LARGE_TARGET_S
        extra = {
            "peak_rss_mb": run["peak_rss_mb"],
            "target_rss_mb": LARGE_TARGET_RSS_MB,
            "peak_rss_note": "whole child process: Python, imports, both label images, evaluation",
        }
    else:
        rng = np.random.default_rng(0)
        y_true = real_labels()
        source = f"monuseg/labels/{IMAGE_ID}.png"
        if y_true is None:
            y_true, source = random_discs(rng), "500 random discs (seed 0)"
        scores, times = time_runs(y_true, perturb(y_true, rng), repeats)
        shape, target_s = list(y_true.shape), TARGET_S
    median = float(np.median(times))
    meets = median < target_s and extra.get("peak_rss_mb", 0) < extra.get("target_rss_mb", 1)
    result = {
        "benchmark": "nucseg.metrics.evaluate_image",
        "input": source,
        "shape": shape,
        "n_true": scores["n_true"],
        "n_pred": scores["n_pred"],
        "aji": scores["aji"],
        "repeats": repeats,
        "median_s": median,
        "min_s": float(np.min(times)),
        "max_s": float(np.max(times)),
        "target_s": target_s,
        **extra,
        "meets_target": bool(meets),
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
        "provenance": record,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out_path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n")
    log.info(
        "evaluate_image on %s (%d true, %d predicted): median %.2f s of %d runs (target %.2f s)%s",
        source, scores["n_true"], scores["n_pred"], median, repeats, target_s,
        f", peak RSS {extra['peak_rss_mb']:.0f} MB" if extra else "",
    )  # fmt: skip
    log.info("wrote %s", out_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
