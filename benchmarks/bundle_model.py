"""Copy a finished run folder into the package as a bundled model (no checkpoint).

    python benchmarks/bundle_model.py runs/default --name default

Copies model.safetensors, config.json, thresholds.json, normaliser.json, history.csv, loss.png and
soup.json (an averaged model's sources, benchmarks/average_weights.py) into
src/nucseg/data/models/<name>/, removes those the run lacks (a previous model's), and refuses
weights over 16 MiB. Replacing a bundled model needs --overwrite. Then writes the folder's
SHA256SUMS (nucseg.provenance.write_manifest; tests/test_bundled_model.py checks it), which
result JSONs are compared with.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from nucseg.provenance import write_manifest

FILES = ("model.safetensors", "config.json", "thresholds.json", "normaliser.json", "history.csv",
         "loss.png", "soup.json")  # fmt: skip
MAX_BYTES = 16 * 2**20
DEST = Path(__file__).resolve().parents[1] / "src" / "nucseg" / "data" / "models"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--name", default="default")
    parser.add_argument("--overwrite", action="store_true", help="replace a bundled model")
    args = parser.parse_args()
    weights = args.run / "model.safetensors"
    if not weights.is_file():
        raise SystemExit(f"{weights} is missing: is {args.run} a finished run?")
    if weights.stat().st_size > MAX_BYTES:
        raise SystemExit(f"{weights} is {weights.stat().st_size / 2**20:.1f} MiB, over 16 MiB")
    target = DEST / args.name
    if (target / "model.safetensors").is_file() and not args.overwrite:
        raise SystemExit(f"{target} already holds a model; pass --overwrite to replace it")
    target.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        if (args.run / name).is_file():
            shutil.copy2(args.run / name, target / name)
        elif (target / name).is_file():
            (target / name).unlink()
    print(f"bundled {args.run} as {target}; wrote {write_manifest(target)}")


if __name__ == "__main__":
    main()
