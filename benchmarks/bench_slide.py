"""Whole-slide benchmark of this checkout against the landed commit b9e4836, in one run.

Builds two synthetic pyramidal 40x slides (tiled JPEG TIFF, mpp 0.25, 4 levels) on a white
background: "s32", 5792 x 5792 (34 Mpx) holding one block of 12 MoNuSeg training images (4 x 3,
48-pixel gaps), and "s128", 11584 x 11584 (134 Mpx) holding four such blocks. Then, interleaved
repeat after repeat (the order rotating), each slide goes through ``nucseg slide`` of

- ``base``: the landed commit (``git worktree add --detach`` into ``--base-dir``; its own ``src``
  on PYTHONPATH, the same Python);
- ``new``: this checkout, default settings (backend auto);
- ``new-torch``: this checkout with ``--backend torch`` (s32 only);

each in its own process, recording wall seconds (start-up and outputs included), the child's CPU
seconds (``getrusage``), the report's stage times, peak RSS and pixels computed by the network.
Tissue MPx/s = the report's level-0 tissue megapixels / wall seconds; core-seconds per tissue MPx =
CPU seconds / tissue megapixels. ``nucseg segment`` on one 1000 x 1000 MoNuSeg breast image (start-
up included) is timed the same way for the three variants, and ``profile_chunk.py`` of each side
gives its per-stage CPU seconds per megapixel. One warm-up run of each variant comes first (page
cache; this checkout's OpenVINO cache). Medians with min and max; the machine's load is recorded
before, after and at every run, since ratios from one interleaved run are what count on a shared
machine.

    python benchmarks/bench_slide.py --out results/slide/bench_engine.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nucseg import datasets
from nucseg.atomic import write_json
from nucseg.pipeline import provenance, resolve_model
from nucseg.slide.synthetic import mosaic_region, write_slide

ROOT = Path(__file__).resolve().parents[1]
BASE_COMMIT = "b9e4836"
SIZES = {"s32": 5792, "s128": 11584}
BLOCK_ORIGINS = {"s32": [(1024, 1024)], "s128": [(1024, 1024), (1024, 6816), (6816, 1024),
                                                  (6816, 6816)]}  # fmt: skip


def load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def base_tree(folder: Path, commit: str) -> Path:
    """The landed commit checked out at ``folder`` (added once, reused)."""
    if not (folder / "src" / "nucseg").is_dir():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(folder),
                        commit], check=True, capture_output=True)  # fmt: skip
    return folder


def build_slides(folder: Path) -> dict[str, Path]:
    samples = list(datasets.load("monuseg", split="train"))[:12]
    paths = {}
    for name, side in SIZES.items():
        images, origins = [], []
        for r0, c0 in BLOCK_ORIGINS[name]:
            for k, s in enumerate(samples):
                images.append(s.image)
                origins.append((r0 + (k // 4) * 1048, c0 + (k % 4) * 1048))
        region = mosaic_region(images, origins)
        paths[name] = write_slide(folder / f"{name}.tif", (side, side), region, mpp=0.25, levels=4)
        print(f"wrote {name} ({side} x {side})", flush=True)
    return paths


def timed(command: list[str], src: Path) -> tuple[float, float]:
    """Wall and CPU seconds (user + system, this child alone) of ``command``."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=env)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def run_slide(path: Path, out: Path, src: Path, extra: list[str]) -> dict:
    command = [sys.executable, "-m", "nucseg.cli", "slide", str(path), "--out", str(out),
               "--no-progress", "--overwrite", *extra]  # fmt: skip
    load_before = load()
    wall, cpu = timed(command, src)
    report = json.loads((out / path.stem / "report.json").read_text())
    tissue = report["tissue_mpx"]
    network = report.get("network_mpx")
    return {
        "wall_s": wall, "cpu_s": cpu, "tissue_mpx": tissue, "nuclei": report["nuclei"],
        "mpx_per_s": tissue / wall, "core_s_per_tissue_mpx": cpu / tissue,
        "network_mpx": network,
        "network_pixels_per_tissue_pixel": None if network is None else network / tissue,
        "peak_rss_mb": report["peak_rss_mb"], "times": report["times"],
        "report_seconds": report["seconds"], "predict": report.get("predict"),
        "load_before": load_before,
    }  # fmt: skip


def run_segment(image: Path, src: Path, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "nucseg.cli", "segment", str(image), "--out", out]
        load_before = load()
        wall, cpu = timed(command + extra, src)
    return {"wall_s": wall, "cpu_s": cpu, "load_before": load_before}


def profile(src: Path, script: Path, out: Path) -> dict:
    # the datasets as this checkout finds them: the base's worktree (under /tmp) has no ../shared
    env = {**os.environ, "PYTHONPATH": str(src), "NUCSEG_DATA": str(datasets.data_root())}
    done = subprocess.run([sys.executable, str(script), "--out", str(out)], capture_output=True,
                          text=True, env=env, cwd=script.parents[1])  # fmt: skip
    if done.returncode:  # say why, rather than lose the whole run's record to a bare exit status
        raise RuntimeError(f"{script} failed:\n{done.stderr[-3000:]}")
    return json.loads(out.read_text())


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default=BASE_COMMIT)
    parser.add_argument("--base-dir", type=Path, default=Path("/tmp/nucseg-base"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("results/slide/bench_engine.json"))
    args = parser.parse_args()
    origin = provenance(models=[resolve_model("default")])
    base = base_tree(args.base_dir, args.base)
    variants = {"base": (base / "src", []), "new": (ROOT / "src", []),
                "new-torch": (ROOT / "src", ["--backend", "torch"])}  # fmt: skip
    record: dict = {
        "benchmark": f"nucseg slide and segment, this checkout against {args.base}",
        "base_commit": args.base,
        "repeats": args.repeats,
        "load_before": load(),
    }
    name, split = datasets.resolve_eval_dataset("monuseg-breast")
    image = (
        datasets.data_root() / "monuseg" / "images" / f"{datasets.ids(name, split=split)[0]}.tif"
    )
    runs: dict = {"slides": {}, "segment": {v: [] for v in variants}}
    with tempfile.TemporaryDirectory() as tmp:
        slides = build_slides(Path(tmp))
        out = Path(tmp) / "out"
        for v, (src, extra) in variants.items():  # warm-up: page cache, OpenVINO cache
            run_slide(slides["s32"], out / v, src, extra)
        for repeat in range(args.repeats):
            order = list(variants)[repeat % 3 :] + list(variants)[: repeat % 3]
            for slide, path in slides.items():
                for v in order:
                    if v == "new-torch" and slide != "s32":
                        continue
                    src, extra = variants[v]
                    result = run_slide(path, out / v, src, extra)
                    runs["slides"].setdefault(slide, {}).setdefault(v, []).append(result)
                    show = (f"{result['wall_s']:.1f} s", f"{result['mpx_per_s']:.2f} MPx/s",
                            f"{result['core_s_per_tissue_mpx']:.2f} core-s/MPx",
                            f"{result['peak_rss_mb']:.0f} MB", result["load_before"])  # fmt: skip
                    print(slide, v, *show, flush=True)
            for v in order:
                src, extra = variants[v]
                runs["segment"][v].append(run_segment(image, src, extra))
                print("segment", v, f"{runs['segment'][v][-1]['wall_s']:.2f} s", flush=True)
        if not args.no_profile:
            script = "benchmarks/profile_chunk.py"
            record["chunk_profile"] = {
                v: profile(tree / "src", tree / script, Path(tmp) / f"{v}.json")
                for v, tree in (("base", base), ("new", ROOT))
            }
    record.update(runs=runs, summary=summarise(runs), load_after=load(), provenance=origin)
    write_json(args.out, record, overwrite=True)
    print(json.dumps(record["summary"], indent=1))
    print(f"wrote {args.out}")


def summarise(runs: dict) -> dict:
    """Medians (min, max) of each figure, and the ratios the issue's targets are stated in."""
    out: dict = {"slides": {}, "segment": {}}
    keys = ("wall_s", "mpx_per_s", "core_s_per_tissue_mpx", "peak_rss_mb",
            "network_pixels_per_tissue_pixel")  # fmt: skip
    for slide, by_variant in runs["slides"].items():
        for v, results in by_variant.items():
            out["slides"].setdefault(slide, {})[v] = {
                k: summary([r[k] for r in results]) for k in keys if results[0][k] is not None
            }
    for v, results in runs["segment"].items():
        out["segment"][v] = summary([r["wall_s"] for r in results])
    med = {s: {v: f["mpx_per_s"]["median"] for v, f in d.items()} for s, d in out["slides"].items()}
    rss = out["slides"]
    out["ratios"] = {
        "throughput_new_vs_base": {s: m["new"] / m["base"] for s, m in med.items()},
        "throughput_new_vs_new_torch_s32": med["s32"]["new"] / med["s32"]["new-torch"],
        "peak_rss_s128_vs_s32_new": rss["s128"]["new"]["peak_rss_mb"]["median"]
        / rss["s32"]["new"]["peak_rss_mb"]["median"],
        "segment_base_vs_new": out["segment"]["base"]["median"] / out["segment"]["new"]["median"],
    }
    return out


if __name__ == "__main__":
    main()
