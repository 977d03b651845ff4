"""Viewer benchmark: time to the first tile, a 10,000-nucleus viewport query, report sizes;
and the screenshots of docs/viewer.md.

Runs, in one go:

1. The benchmark slides of ``bench_slide.py`` (the same block of MoNuSeg training images on a
   white 10240 x 10240 slide, "small", and on a 32768 x 32768 one, about 1.07 Gpx) and
   ``nucseg slide`` with the bundled default model on the small one: its ``report.html`` and
   ``thumbnail_overlay.png`` sizes.
2. A synthetic nuclei table for the 1 Gpx slide: the small run's real nuclei (outlines and
   measurements) copied side by side over the whole slide, as if it were all tissue at the
   small run's density (``nuclei.parquet`` with one row group per 4080-pixel chunk, as the
   slide writer makes). The slide's pixels stay the benchmark slide's; only the table is
   synthetic.
3. For each run: the viewer's start (outputs found, nuclei indexed, overview read: until the
   address is printed), the first tile in Chromium (milliseconds from the page's navigation
   to its first ``tile-loaded`` event, a new server each time, so the tile cache is empty),
   the background prefetch of the outlines, and viewport queries of about 10,000 nuclei
   (:meth:`nucseg.viewer.nuclei.NucleiLayer.outlines` thinned for a 1000-pixel wide screen;
   cold: nothing decoded yet, the box's rows read and decoded from the Parquet file; warm:
   after the prefetch; and the same through HTTP).
4. Screenshots of the small run under ``results/viewer/``.

Writes results/viewer/bench.json with the machine load (``uptime``) before and after.

    python benchmarks/bench_viewer.py
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import shapely
from bench_slide import load as load_average

from nucseg import datasets
from nucseg.pipeline import provenance, resolve_model
from nucseg.slide.synthetic import mosaic_region, write_slide

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]  # fmt: skip
TARGET_NUCLEI = 10_000
SIZES = {"small": (10240, 10240), "large": (32768, 32768)}


def build_slides(folder: Path, n_images: int) -> dict[str, Path]:
    """The two slides, with the same block of MoNuSeg training images at the same place."""
    samples = list(datasets.load("monuseg", split="train"))[:n_images]
    origins = [(2048 + (k // 4) * 1048, 2048 + (k % 4) * 1048) for k in range(len(samples))]
    region = mosaic_region([s.image for s in samples], origins)
    paths = {}
    for name, shape in SIZES.items():
        start = time.perf_counter()
        paths[name] = write_slide(folder / f"{name}.tif", shape, region, mpp=0.25, levels=4)
        print(f"wrote {name} slide {shape} in {time.perf_counter() - start:.0f} s", flush=True)
    return paths


def run_small(slide: Path, out: Path, model: str) -> Path:
    command = [sys.executable, "-m", "nucseg.cli", "slide", str(slide), "--out", str(out),
               "--no-progress", "--model", model]  # fmt: skip
    subprocess.run(command, check=True)
    return out / slide.stem


def synthetic_gpx(small: Path, slide: Path, folder: Path, *, chunk: int = 4080) -> Path:
    """The small run's nuclei copied over the whole 1 Gpx slide (see the module docstring)."""
    table = pq.read_table(small / "nuclei.parquet")
    frame = table.drop(["geometry"]).to_pandas()
    shapes = shapely.from_wkb(table["geometry"].to_numpy(zero_copy_only=False))
    x0, y0 = frame["bbox_x0"].min(), frame["bbox_y0"].min()
    pw, ph = frame["bbox_x1"].max() - x0, frame["bbox_y1"].max() - y0
    report = json.loads((small / "report.json").read_text())
    width, height = 32768, 32768
    parts = []
    for oy in np.arange(0, height - ph, ph):
        for ox in np.arange(0, width - pw, pw):
            dx, dy = ox - x0, oy - y0
            part = frame.copy()
            for name in ("centroid_x", "bbox_x0", "bbox_x1"):
                part[name] += dx
            for name in ("centroid_y", "bbox_y0", "bbox_y1"):
                part[name] += dy
            part["geometry"] = shapely.to_wkb(
                shapely.transform(shapes, lambda c, d=(dx, dy): c + d)
            )
            parts.append(part)
    import pandas as pd

    out = pd.concat(parts, ignore_index=True)
    out["chunk_row"] = (out["centroid_y"] // chunk).astype("int32")
    out["chunk_col"] = (out["centroid_x"] // chunk).astype("int32")
    out = out.sort_values(["chunk_row", "chunk_col"], kind="stable").reset_index(drop=True)
    out["id"] = np.arange(1, len(out) + 1)
    mpp = report["mpp"]
    out["centroid_x_um"], out["centroid_y_um"] = out["centroid_x"] * mpp, out["centroid_y"] * mpp
    arrow = pa.Table.from_pandas(out, schema=table.schema, preserve_index=False)
    folder.mkdir(parents=True, exist_ok=True)
    groups = np.flatnonzero(np.diff(out["chunk_row"] * 10_000 + out["chunk_col"])) + 1
    with pq.ParquetWriter(folder / "nuclei.parquet", table.schema, compression="zstd") as writer:
        for a, b in zip(np.r_[0, groups], np.r_[groups, len(out)], strict=True):
            writer.write_table(arrow.slice(a, b - a))
    report.update(slide=str(slide), dimensions=[width, height], nuclei=len(out),
                  quality={"chunks": {}}, synthetic="nuclei copied from the small run")  # fmt: skip
    (folder / "report.json").write_text(json.dumps(report, indent=1))
    return folder


def serve(folder: Path, **options):
    from nucseg.viewer import start

    t = time.perf_counter()
    server, url = start(folder, **options)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    viewer = server.RequestHandlerClass.viewer
    name = next(iter(viewer.items))
    viewer.describe(name)  # what the page asks first: opens the slide, builds the index
    return server, url, viewer.nuclei(name), time.perf_counter() - t


def first_tile_ms(browser, url: str) -> float:
    page = browser.new_page(viewport={"width": 1200, "height": 800})
    try:
        page.goto(url)
        page.wait_for_function("window.nucseg && nucseg.firstTileMs !== null", timeout=120_000)
        return float(page.evaluate("nucseg.firstTileMs"))
    finally:
        page.close()


def viewport_queries(layer, cold_layer, url: str, name: str, *, n: int, seed: int = 0) -> dict:
    """Boxes of about TARGET_NUCLEI nuclei around random nuclei: times with every outline
    decoded (``layer``, prefetched), with none (``cold_layer``: only the box's rows decoded from
    the Parquet file), and through HTTP (the viewer's, prefetched)."""
    rng = np.random.default_rng(seed)
    table = layer.table
    cold, warm, http, counts = [], [], [], []
    for row in rng.choice(len(table), size=n, replace=False):
        cx, cy = table["centroid_x"].iat[row], table["centroid_y"].iat[row]
        side = 500.0
        while len(layer.query((cx - side, cy - side, cx + side, cy + side))) < TARGET_NUCLEI:
            side *= 1.05
        box = (cx - side, cy - side, cx + side, cy + side)
        tolerance = 2 * side / 1000 * 0.5  # half a pixel of a 1000-pixel wide view
        counts.append(len(layer.query(box)))
        t = time.perf_counter()
        data = cold_layer.outlines(box, tolerance=tolerance)
        cold.append(time.perf_counter() - t)
        t = time.perf_counter()
        assert layer.outlines(box, tolerance=tolerance) == data
        warm.append(time.perf_counter() - t)
        query = f"x0={box[0]}&y0={box[1]}&x1={box[2]}&y1={box[3]}&tol={tolerance}"
        t = time.perf_counter()
        with urllib.request.urlopen(f"{url}api/{name}/nuclei?{query}") as response:
            body = response.read()
        http.append(time.perf_counter() - t)
        assert body == data

    def summary(values):
        ms = [1000 * v for v in values]
        return {"median_ms": statistics.median(ms), "max_ms": max(ms), "all_ms": ms}

    return {"boxes": n, "nuclei_per_box": counts, "cold": summary(cold), "warm": summary(warm),
            "http_warm": summary(http), "bytes_last": len(data)}  # fmt: skip


def measure(browser, folder: Path, *, queries: int) -> dict:
    """Start time and first tile with three new servers; viewport queries on the last."""
    result: dict = {"first_tile_ms": []}
    for attempt in range(3):
        server, url, layer, start_s = serve(folder)
        try:
            result.setdefault("start_s", start_s)
            result["nuclei"] = len(layer)
            result["first_tile_ms"].append(first_tile_ms(browser, url))
            if attempt == 2:
                t = time.perf_counter()
                layer.prefetch()  # beside the viewer's own background prefetch
                result["prefetch_s"] = time.perf_counter() - t
                result["prefetch_mb"] = layer._rings._bytes() / 1e6
            if attempt == 2 and queries:
                from nucseg.viewer.nuclei import NucleiLayer

                name = next(iter(server.RequestHandlerClass.viewer.items))
                cold = NucleiLayer.from_parquet(folder / "nuclei.parquet")  # nothing decoded
                result["queries"] = viewport_queries(layer, cold, url, name, n=queries)
        finally:
            server.shutdown()
            server.server_close()
    return result


def _zoom(page, box) -> None:
    before = page.evaluate("JSON.stringify(nucseg.box)")
    page.evaluate(
        """([x, y, w, h]) => { const v = nucseg_viewer();
        v.viewport.fitBounds(v.world.getItemAt(0).imageToViewportRectangle(x, y, w, h), true); }""",
        list(box),
    )
    page.wait_for_function("(b) => JSON.stringify(nucseg.box) !== b", arg=before, timeout=120_000)
    page.wait_for_function("nucseg.drawn === nucseg.count || !nucseg.complete", timeout=120_000)
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(1500)  # tiles blend in


def _open(browser, url: str):
    page = browser.new_page(viewport={"width": 1300, "height": 820})
    page.goto(url)
    page.wait_for_function("window.nucseg && nucseg.ready && nucseg.box !== null", timeout=120_000)
    return page


def screenshots(browser, small: Path, flagged: Path, out: Path) -> list[str]:
    """The pictures of docs/viewer.md: density, outlines with a clicked nucleus, a flagged chunk
    (of ``flagged``: the small run if it has one), the report."""
    import pandas as pd

    table = pd.read_parquet(small / "nuclei.parquet")
    written = []
    server, url, _, _ = serve(small, max_outlines=2000)
    page = _open(browser, url)
    _zoom(page, (1500, 1500, 5400, 4400))
    page.screenshot(path=out / "viewer_density.jpg", type="jpeg", quality=80)
    page.close()
    server.shutdown()
    server.server_close()
    written.append("viewer_density.jpg")
    server, url, _, _ = serve(small)
    page = _open(browser, url)
    nucleus = table.iloc[len(table) // 3]
    x, y = nucleus["centroid_x"], nucleus["centroid_y"]
    _zoom(page, (x - 300, y - 190, 600, 380))
    point = page.evaluate(
        """([x, y]) => { const v = nucseg_viewer(), image = v.world.getItemAt(0);
        const p = image.imageToViewerElementCoordinates(new OpenSeadragon.Point(x, y));
        const box = v.element.getBoundingClientRect(); return [box.left + p.x, box.top + p.y]; }""",
        [x, y],
    )
    page.mouse.click(*point)
    page.wait_for_selector("#nucleus", timeout=120_000)
    page.wait_for_timeout(500)
    page.screenshot(path=out / "viewer_outlines.jpg", type="jpeg", quality=80)
    page.close()
    report = browser.new_page(viewport={"width": 1100, "height": 1500})
    report.goto((small / "report.html").as_uri())
    report.screenshot(path=out / "report.jpg", type="jpeg", quality=75)
    report.close()
    server.shutdown()
    server.server_close()
    written += ["viewer_outlines.jpg", "report.jpg"]
    server, url, _, _ = serve(flagged)
    page = _open(browser, url)
    page.locator(".flag").first.hover()
    page.locator("#tip").wait_for(state="visible", timeout=120_000)
    page.screenshot(path=out / "viewer_flags.jpg", type="jpeg", quality=80)
    page.close()
    server.shutdown()
    server.server_close()
    written.append("viewer_flags.jpg")
    return written


def main() -> None:
    from playwright.sync_api import sync_playwright

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from viewer_helpers import make_run

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--images", type=int, default=12, help="training images in the block")
    parser.add_argument("--queries", type=int, default=20, help="10,000-nucleus viewports timed")
    parser.add_argument("--out", type=Path, default=Path("results/viewer"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"benchmark": "nucseg view: first tile, viewport query; report sizes",
              "load_before": load_average()}  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="bench_viewer_"))
    try:
        slides = build_slides(work, args.images)
        small = run_small(slides["small"], work / "out", args.model)
        gpx = synthetic_gpx(small, slides["large"], work / "gpx" / "large")
        flagged = small
        if not (small / "report.html").read_text().count('alt="chunk '):  # no flag: a made one
            (work / "flagged").mkdir()
            flagged = make_run(work / "flagged")
        result["small_run"] = {
            "report_html_bytes": (small / "report.html").stat().st_size,
            "thumbnail_png_bytes": (small / "thumbnail_overlay.png").stat().st_size,
            "thumbnail_size": list(
                __import__("PIL.Image").Image.open(small / "thumbnail_overlay.png").size
            ),
        }
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=shutil.which("chromium"),
                                                 args=CHROMIUM_ARGS)  # fmt: skip
            result["small"] = measure(browser, small, queries=0)  # fewer than 10,000 nuclei
            result["gpx_synthetic_nuclei"] = measure(browser, gpx, queries=args.queries)
            result["screenshots"] = screenshots(browser, small, flagged, args.out)
            browser.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["load_after"] = load_average()
    result["provenance"] = provenance(sys.argv, models=[resolve_model(args.model)])
    (args.out / "bench.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "provenance"}, indent=1)[:4000])


if __name__ == "__main__":
    main()
