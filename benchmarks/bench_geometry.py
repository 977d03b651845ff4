"""Time :func:`nucseg.geometry.nucleus_polygons` and check its polygons on real labels.

Two inputs: a 1000 x 1000 label image with 500 random ellipses (seed 8, as in
``tests/test_io.py``; target < 0.2 s for polygons and measurements), and the ground-truth labels
of the 8 MoNuSeg breast images (from ``$NUCSEG_DATA``, default ``../shared/datasets``). For each,
the median time of nucleus_polygons + polygon_measurements over the repeats, the number of
polygons, how many are MultiPolygons, and whether every polygon is valid and has the label's
pixel count as area. Single thread. The JSON records :func:`nucseg.provenance.provenance`.

Usage: ``python benchmarks/bench_geometry.py [--out FILE] [--repeats 5]`` (default FILE:
``results/benchmarks/geometry.json``)
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy is imported

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import shapely  # noqa: E402
from skimage import draw  # noqa: E402

from nucseg.atomic import atomic_write  # noqa: E402
from nucseg.geometry import nucleus_polygons, polygon_measurements  # noqa: E402
from nucseg.provenance import provenance  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 0.2
MONUSEG_BREAST = (
    "TCGA-A7-A13E-01Z-00-DX1", "TCGA-A7-A13F-01Z-00-DX1", "TCGA-AC-A2FO-01A-01-TS1",
    "TCGA-AO-A0J2-01A-01-BSA", "TCGA-AR-A1AK-01Z-00-DX1", "TCGA-AR-A1AS-01Z-00-DX1",
    "TCGA-E2-A14V-01Z-00-DX1", "TCGA-E2-A1B5-01Z-00-DX1",
)  # fmt: skip
log = logging.getLogger("bench_geometry")


def ellipses(seed: int = 8) -> np.ndarray:
    """500 ellipses of semi-axes 6-15 px on a 44-px grid of a 1000 x 1000 image."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((1000, 1000), np.int32)
    centres = [(r, c) for r in range(22, 1000, 44) for c in range(22, 1000, 44)][:500]
    for k, (r, c) in enumerate(centres, start=1):
        rr, cc = draw.ellipse(r, c, rng.uniform(6, 15), rng.uniform(6, 15), shape=labels.shape,
                              rotation=rng.uniform(0, np.pi))  # fmt: skip
        labels[rr, cc] = k
    return labels


def measure(labels: np.ndarray, repeats: int) -> dict:
    """Timing and checks of one label image."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        pairs = list(nucleus_polygons(labels))
        polygon_measurements([p for _, p in pairs], mpp=0.25)
        times.append(time.perf_counter() - start)
    geometries = np.array([p for _, p in pairs], dtype=object)
    counts = np.bincount(labels.ravel())
    return {
        "shape": list(labels.shape),
        "n_polygons": len(pairs),
        "n_multipolygons": int(sum(p.geom_type == "MultiPolygon" for _, p in pairs)),
        "all_valid": bool(shapely.is_valid(geometries).all()),
        "area_is_pixel_count": bool(
            np.array_equal(shapely.area(geometries), counts[[k for k, _ in pairs]])
        ),
        "median_s": float(np.median(times)),
        "min_s": float(np.min(times)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "results/benchmarks/geometry.json")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    record = provenance(["python", *sys.argv] if argv is None else ["python", __file__, *argv])

    synthetic = measure(ellipses(), args.repeats)
    synthetic["input"] = "500 random ellipses, 1000 x 1000 (seed 8)"
    log.info("ellipses: %d polygons in %.3f s", synthetic["n_polygons"], synthetic["median_s"])
    real = {}
    from nucseg import datasets

    for image_id in MONUSEG_BREAST:
        _, _, labels = datasets.load_sample("monuseg", image_id)
        real[image_id] = measure(labels, args.repeats)
        log.info("%s: %d polygons (%d multi) in %.3f s, all valid %s", image_id,
                 real[image_id]["n_polygons"], real[image_id]["n_multipolygons"],
                 real[image_id]["median_s"], real[image_id]["all_valid"])  # fmt: skip
    result = {
        "benchmark": "nucseg.geometry.nucleus_polygons + polygon_measurements",
        "repeats": args.repeats,
        "target_s": TARGET_S,
        "synthetic": synthetic,
        "meets_target": synthetic["median_s"] < TARGET_S,
        "monuseg_breast": real,
        "monuseg_breast_total_s": sum(r["median_s"] for r in real.values()),
        "monuseg_breast_all_valid": all(r["all_valid"] for r in real.values()),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "threads": 1,
        "provenance": record,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(args.out, overwrite=True) as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n")
    log.info("MoNuSeg breast: %.2f s in all; wrote %s", result["monuseg_breast_total_s"], args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
