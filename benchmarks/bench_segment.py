"""Time ``nucseg segment`` per 1000x1000 image, start-up excluded.

Runs the command on 1 image and on 5 images (MoNuSeg breast images, 1000 x 1000) and reports
``(t5 - t1) / 4``: the cost of one more image, without Python, torch and model start-up. Each
timing is the median of three runs. Writes JSON with the machine, load and commit.

    python benchmarks/bench_segment.py                      # the default (bundled) model
    python benchmarks/bench_segment.py --model runs/default --out results/unet/speed.json
    python benchmarks/bench_segment.py --baseline-commit 2597206   # against an older bundle

With ``--baseline-commit``, the bundled default model of that commit (its files, taken with
``git show``) is timed in the same run, the two models' runs alternating, and the record gets
the baseline's figures and the per-image ratio (this model / the baseline); both go through this
checkout's code, so the ratio is the models' own.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import tempfile
from pathlib import Path

from _segment_timing import MIN_REPEATS, ratio_spread, run_segment

from nucseg import datasets
from nucseg.atomic import write_json
from nucseg.pipeline import provenance, resolve_model
from nucseg.provenance import file_sha256


def bundled_model_at(commit: str, folder: Path) -> Path:
    """The bundled default model of ``commit``, its files written into ``folder/default``."""
    where = "src/nucseg/data/models/default"
    names = subprocess.run(
        ["git", "ls-tree", "--name-only", f"{commit}:{where}"],
        check=True, capture_output=True, text=True,
    ).stdout.split()  # fmt: skip
    target = folder / "default"
    target.mkdir(parents=True)
    for name in names:
        blob = subprocess.run(
            ["git", "show", f"{commit}:{where}/{name}"], check=True, capture_output=True
        ).stdout
        (target / name).write_bytes(blob)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model folder or bundled name (default: nucseg's default)")
    parser.add_argument("--method", help="a classical method instead of a model")
    parser.add_argument("--param", action="append", default=[], help="KEY=VALUE, passed on")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("results/unet/speed.json"))
    parser.add_argument("--baseline-commit", help="also time the bundled model of this commit")
    args = parser.parse_args()
    if args.baseline_commit and args.repeats < MIN_REPEATS:
        parser.error(f"--repeats must be at least {MIN_REPEATS} to compare with a baseline")
    extra = [f"--param={p}" for p in args.param]
    extra += ["--model", args.model] if args.model else []
    extra += ["--method", args.method] if args.method else []
    model = None if args.method else resolve_model(args.model or "default")
    origin = provenance(models=[model] if model is not None else [])
    root = datasets.data_root() / "monuseg" / "images"
    images = [root / f"{i}.tif" for i in datasets.ids("monuseg", split="test")[:5]]
    with tempfile.TemporaryDirectory() as folder:
        runs = {"model": extra}
        if args.baseline_commit:
            baseline = bundled_model_at(args.baseline_commit, Path(folder))
            runs["baseline"] = [e for e in extra if e not in ("--model", args.model)]
            runs["baseline"] += ["--model", str(baseline)]
            baseline_sha256 = file_sha256(baseline / "model.safetensors")
        times = {name: {1: [], 5: []} for name in runs}
        for options in runs.values():  # warm-up, not timed: a first run compiles and caches
            run_segment(images[:1], options)  # (OpenVINO's model cache), which no later run does
        for _ in range(args.repeats):  # alternating, so that drift hits both alike
            for name, options in runs.items():
                times[name][1].append(run_segment(images[:1], options))
                times[name][5].append(run_segment(images, options))
    figures = {}
    for name, runs_of in times.items():
        t1, t5 = statistics.median(runs_of[1]), statistics.median(runs_of[5])
        figures[name] = {"t1_s": t1, "t5_s": t5, "per_image_s": (t5 - t1) / 4, "runs": runs_of}
        print(f"{name}: 1 image {t1:.2f} s, 5 images {t5:.2f} s -> {(t5 - t1) / 4:.2f} s per image")
    t1, t5, per_image = (figures["model"][k] for k in ("t1_s", "t5_s", "per_image_s"))
    record = {
        "benchmark": "nucseg segment, seconds per 1000x1000 image, start-up excluded",
        "t1_s": t1,
        "t5_s": t5,
        "per_image_s": per_image,
        "runs": figures["model"]["runs"],
        "target_s": 1.5,
        "images": [p.name for p in images],
        "options": extra,
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "load_average_1min": round(os.getloadavg()[0], 2)},
        "provenance": origin,
    }  # fmt: skip
    if args.baseline_commit:
        base = figures["baseline"]
        record["baseline"] = {"commit": args.baseline_commit, "sha256": baseline_sha256, **base}
        record["ratio_to_baseline"] = per_image / base["per_image_s"]
        spread = ratio_spread(  # per repeat: this model's seconds per image / the baseline's
            [(a - b) / 4 for a, b in zip(times["model"][5], times["model"][1], strict=True)],
            [(a - b) / 4 for a, b in zip(times["baseline"][5], times["baseline"][1], strict=True)],
        )
        record["ratio_to_baseline_spread"] = spread
        print(
            f"this model / the baseline's, per image: median {spread['median']:.3f} "
            f"({spread['min']:.3f}-{spread['max']:.3f} over {spread['repeats']} repeats)"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, record, overwrite=True)


if __name__ == "__main__":
    main()
