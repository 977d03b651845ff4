"""``nucseg segment`` of this checkout against another commit's (or another model), in one run.

Speed is compared only as a ratio measured in one run on one machine: the baseline commit is
checked out beside this one (``git worktree``, removed afterwards) and both run with the same
Python; each timing is ``nucseg segment`` on 1 and on N = 13 MoNuSeg images (1000 x 1000: the 8
breast test images, then non-breast ones; ``--images``), the cost of one more image being
``(tN - t1) / (N - 1)``, start-up excluded, and the two versions alternate, repeat after
repeat, so that a change in the machine's load hits both. Writes JSON with the per-image seconds
of each side, their ratio, the load before and after, and the provenance.

    python benchmarks/bench_segment_compare.py --baseline 95d5cc0 \
        --out results/slide/segment_speed.json
    python benchmarks/bench_segment_compare.py --model runs/new --baseline-model default --out ...
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _segment_timing import MIN_REPEATS, ratio_spread, run_segment

from nucseg import datasets
from nucseg.atomic import write_json
from nucseg.pipeline import provenance, resolve_model

ROOT = Path(__file__).resolve().parents[1]


def imported_from(src: Path | None, label: str) -> str:
    """Which nucseg a side runs, without a machine path: ``label:`` and the imported package's
    ``__init__.py`` relative to its checkout (``src`` is None for this one)."""
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    code = "import nucseg; print(nucseg.__file__)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    checkout = ROOT if src is None else src.parent
    path = Path(done.stdout.strip()).resolve()
    if not path.is_relative_to(checkout.resolve()):
        raise RuntimeError(f"{label} imports nucseg from {path}, outside {checkout}")
    return f"{label}:{path.relative_to(checkout.resolve()).as_posix()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", help="commit to compare with (default: this checkout)")
    parser.add_argument("--model", default="default", help="model of this checkout's runs")
    parser.add_argument("--baseline-model", help="model of the baseline runs (default: --model)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=13, help="images of the long runs")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.repeats < MIN_REPEATS:
        parser.error(f"--repeats must be at least {MIN_REPEATS}: a ratio is quoted with its spread")
    root = datasets.data_root() / "monuseg" / "images"
    # the 8 breast test images, then non-breast ones: 1000 x 1000 H&E, for timing only
    ids = datasets.ids("monuseg", split="test") + datasets.ids("monuseg", split="nonbreast")
    images = [root / f"{i}.tif" for i in ids[: args.images]]
    n = len(images)
    base_model = args.baseline_model or args.model
    models = [resolve_model(args.model), resolve_model(base_model)]
    origin = provenance(models=models)
    load_before = [round(v, 2) for v in os.getloadavg()]
    with tempfile.TemporaryDirectory() as scratch:
        base_src = None
        if args.baseline:
            tree = Path(scratch) / "baseline"
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), args.baseline],
                check=True,
                capture_output=True,
            )
            base_src = tree / "src"
        try:
            sides = {"new": (None, args.model), "baseline": (base_src, base_model)}
            labels = {
                "new": "this checkout",
                "baseline": f"commit {args.baseline}" if args.baseline else "this checkout",
            }
            where = {name: imported_from(src, labels[name]) for name, (src, _) in sides.items()}
            print(where, flush=True)
            times = {name: {"t1": [], "tN": []} for name in sides}
            for repeat in range(args.repeats):
                for n_images in (1, n):
                    for name, (src, model) in sides.items():
                        seconds = run_segment(images[:n_images], ["--model", model], src=src)
                        times[name]["t1" if n_images == 1 else "tN"].append(seconds)
                        print(
                            f"repeat {repeat}: {name} {n_images} images {seconds:.2f} s", flush=True
                        )
        finally:
            if args.baseline:
                subprocess.run(
                    ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                    check=False,
                    capture_output=True,
                )
    result = {}
    for name in sides:
        t1, tn = statistics.median(times[name]["t1"]), statistics.median(times[name]["tN"])
        result[name] = {
            "t1_s": t1,
            "tN_s": tn,
            "per_image_s": (tn - t1) / (n - 1),
            "runs": times[name],
            "imported_from": where[name],
        }
    speedup = result["baseline"]["per_image_s"] / result["new"]["per_image_s"]
    # the same ratio repeat by repeat (each repeat runs both sides back to back), whose median
    # is steadier than the ratio of medians when the machine's speed drifts between repeats
    spread = ratio_spread(
        [times["baseline"]["tN"][k] - times["baseline"]["t1"][k] for k in range(args.repeats)],
        [times["new"]["tN"][k] - times["new"]["t1"][k] for k in range(args.repeats)],
    )
    per_repeat = spread["per_repeat"]
    print(
        f"per image: new {result['new']['per_image_s']:.3f} s, baseline "
        f"{result['baseline']['per_image_s']:.3f} s -> {spread['median']:.2f}x faster (median of "
        f"{spread['repeats']} interleaved repeats, {spread['min']:.2f}-{spread['max']:.2f})"
    )
    record = {
        "benchmark": "nucseg segment per 1000x1000 image, this checkout against a baseline",
        "baseline_commit": args.baseline,
        "model": args.model,
        "baseline_model": base_model,
        "images": [p.name for p in images],
        **result,
        "speedup": speedup,
        "speedup_per_repeat": per_repeat,
        "speedup_median_per_repeat": spread["median"],
        "speedup_min_per_repeat": spread["min"],
        "speedup_max_per_repeat": spread["max"],
        "load_before": load_before,
        "load_after": [round(v, 2) for v in os.getloadavg()],
        "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **origin,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, record, overwrite=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
