"""Where the network's pixels go on the whole-slide benchmark slides, counted without the network.

For each slide of benchmarks/bench_slide.py ("s32", "s128", built the same way) and each setting
asked, the slide is planned as ``nucseg slide`` plans it (tissue mask, chunk grid, tissue reads)
and each chunk is read and tiled as :meth:`nucseg.slide.engine.ChunkSegmenter.predict` tiles it;
no tile goes to the network. The counts, in work pixels, form a chain from the tissue to what
the network computes:

- ``tissue``: the overview's tissue mask at work resolution (the report's tissue MPx);
- ``windows``: the chunks' windows (core and halo) as read;
- ``boxes``: their tissue boxes (stained pixels plus :data:`~nucseg.slide.engine.TISSUE_MARGIN`),
  what is normalised, stitched and post-processed;
- ``padded``: the boxes padded to a tile where smaller;
- ``grid``: the tiles of the boxes' grids, overlaps counted twice (``tiles x tile^2``);
- ``network``: the tiles given to the network (those with tissue), the report's network MPx;

and ``stained_core`` / ``stained_window``: stained pixels in the cores and in the windows (their
ratio is the halos' share). Writes results/slide/pixel_budget.json.

    python benchmarks/pixel_budget.py --setting tile=256,overlap=0.03125,halo=128
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from nucseg.atomic import write_json
from nucseg.pipeline import provenance
from nucseg.slide import engine, tissue
from nucseg.slide.reader import open_slide
from nucseg.tiling import pad_to

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_slide import build_slides  # noqa: E402  (the benchmark's slides, built alike)


def parse_setting(text: str) -> dict[str, Any]:
    """``tile=256,overlap=0.03125,halo=128[,chunk=4080]`` as a dict (``nucseg slide``'s
    defaults where not given)."""
    setting = {"tile": 256, "halo": 128, "chunk": engine.DEFAULT_CHUNK}
    for item in filter(None, text.split(",")):
        key, value = item.split("=")
        setting[key] = float(value) if key == "overlap" else int(value)
    setting.setdefault("overlap", engine.SLIDE_OVERLAP_PX / setting["tile"])
    return setting


def count_slide(path: Path, setting: dict[str, Any]) -> dict[str, int]:
    """The chain of counts (see the module docstring) of one slide with one setting."""
    reader = open_slide(path)
    try:
        overview, downsample = tissue.read_overview(reader, tissue.OVERVIEW_MPP / 0.25)
        mask = tissue.tissue_mask(overview, mpp=downsample * 0.25)
        plan = engine.make_plan(
            reader, mpp=0.25, model_mpp=0.25, chunk=setting["chunk"], halo=setting["halo"],
            tissue=mask, tissue_downsample=downsample,
        )  # fmt: skip
        counts = dict.fromkeys(["windows", "boxes", "padded", "grid", "network"], 0)
        counts.update(stained_core=0, stained_window=0, chunks=len(plan.chunks))
        counts["tissue"] = int(round(float(mask.sum()) * (downsample / plan.scale) ** 2))
        for index in plan.chunks:
            pixels = engine.read_chunk(reader, plan, index)
            _count_chunk(counts, plan, index, pixels, setting)
    finally:
        reader.close()
    return counts


def _count_chunk(counts: dict, plan: Any, index: tuple, pixels: np.ndarray, setting: dict) -> None:
    tile = setting["tile"]
    dark = tissue.stained(pixels)
    w0, v0, _, _ = plan.window(index)
    r0, c0, r1, c1 = plan.core(index)
    counts["windows"] += dark.size
    counts["stained_window"] += int(dark.sum())
    counts["stained_core"] += int(dark[r0 - w0 : r1 - w0, c0 - v0 : c1 - v0].sum())
    for box in engine.tissue_boxes(dark):  # as ChunkSegmenter.predict: the tissue's boxes
        part = dark[box]
        counts["boxes"] += part.size
        padded, _ = pad_to(part.view(np.uint8), (tile, tile))
        counts["padded"] += padded.size
        grid = engine.tile_grid_for(padded.shape[:2], tile, setting["overlap"])
        counts["grid"] += len(grid) * tile * tile
        run = sum(int(np.count_nonzero(padded[s])) >= engine.MIN_TILE_TISSUE for s in grid)
        counts["network"] += run * tile * tile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", action="append", default=[],
                        help="tile=,overlap=,halo=,chunk= (repeatable)")  # fmt: skip
    parser.add_argument("--slides", default="s32,s128")
    parser.add_argument("--out", type=Path, default=Path("results/slide/pixel_budget.json"))
    parser.add_argument("--slide-dir", type=Path, default=None,
                        help="where the slides are built (kept; reused when there)")  # fmt: skip
    args = parser.parse_args()
    settings = [parse_setting(s) for s in args.setting] or [parse_setting("")]
    record: dict[str, Any] = {"benchmark": __doc__.splitlines()[0], "results": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.slide_dir or Path(tmp)
        slides = {name: folder / f"{name}.tif" for name in ("s32", "s128")}
        if not all(p.is_file() for p in slides.values()):
            folder.mkdir(parents=True, exist_ok=True)
            slides = build_slides(folder)
        for setting in settings:
            for name in args.slides.split(","):
                counts = count_slide(slides[name], setting)
                ratios = {k: counts[k] / counts["tissue"] for k in
                          ("windows", "boxes", "padded", "grid", "network")}  # fmt: skip
                ratios["halo_share"] = counts["stained_window"] / counts["stained_core"]
                record["results"].append({"slide": name, **setting, "counts": counts,
                                          "per_tissue_pixel": ratios})  # fmt: skip
                print(name, setting, " ".join(f"{k} {v:.3f}" for k, v in ratios.items()),
                      flush=True)  # fmt: skip
    record["load"] = [round(v, 2) for v in os.getloadavg()]
    record["provenance"] = provenance()
    write_json(args.out, record, overwrite=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
