"""profile_chunk.py of a base commit and of this checkout, alternating, in one run.

The base commit's ``src`` is extracted with ``git archive`` into a temporary folder (no worktree
is added); each round runs ``profile_chunk.py --repeats 1`` once with the base's code and once
with this checkout's (the order alternating), each in its own process, so both sides see the same
machine load. Reports, per side, the median over rounds of each stage's CPU seconds per megapixel
and of ``beyond_network`` (normalise + stitch + postprocess + finish), and the per-round ratio of
the two sides' ``beyond_network``. Writes results/slide/chunk_profile_compare.json.

    python benchmarks/profile_chunk_compare.py --base 08d940f --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from nucseg.atomic import write_json
from nucseg.pipeline import provenance

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "profile_chunk.py"


def extract(commit: str, folder: Path) -> Path:
    """``src`` of ``commit`` under ``folder`` (``git archive``)."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "src"],
                             check=True, capture_output=True).stdout  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder / "src"


def profile(src: Path, out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src)}
    subprocess.run([sys.executable, str(SCRIPT), "--repeats", "1", "--out", str(out)],
                   check=True, env=env, capture_output=True)  # fmt: skip
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="08d940f")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path,
                        default=Path("results/slide/chunk_profile_compare.json"))  # fmt: skip
    args = parser.parse_args()
    origin = provenance()
    runs: dict[str, list[dict]] = {"base": [], "new": []}
    with tempfile.TemporaryDirectory() as tmp:
        sides = {"base": extract(args.base, Path(tmp)), "new": ROOT / "src"}
        for k in range(args.rounds):
            for name in ["base", "new"] if k % 2 == 0 else ["new", "base"]:
                record = profile(sides[name], Path(tmp) / f"{name}.json")
                runs[name].append({"cpu_seconds_per_mpx": record["cpu_seconds_per_mpx"],
                                   "nuclei": record["nuclei"], "load": record["load"]})  # fmt: skip
                print(name, json.dumps(record["cpu_seconds_per_mpx"]), flush=True)
    stages = list(runs["new"][0]["cpu_seconds_per_mpx"])
    medians = {name: {s: statistics.median(r["cpu_seconds_per_mpx"][s] for r in rs)
                      for s in stages} for name, rs in runs.items()}  # fmt: skip
    ratio = [b["cpu_seconds_per_mpx"]["beyond_network"] / n["cpu_seconds_per_mpx"]["beyond_network"]
             for b, n in zip(runs["base"], runs["new"], strict=True)]  # fmt: skip
    record = {
        "benchmark": __doc__.splitlines()[0],
        "base_commit": args.base,
        "cpu_seconds_per_mpx_median": medians,
        "beyond_network_base_over_new_per_round": ratio,
        "runs": runs,
        "provenance": origin,
    }
    for name, values in medians.items():
        print(f"{name}: beyond_network {values['beyond_network']:.3f} CPU s per Mpx (median)")
    print("base / new per round:", " ".join(f"{r:.2f}" for r in ratio))
    write_json(args.out, record, overwrite=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
