"""Copy a finished run folder into the package as a bundled model (no checkpoint).

    python benchmarks/bundle_model.py runs/default --name default

Copies model.safetensors, config.json, thresholds.json, normaliser.json, history.csv, loss.png,
soup.json (an averaged model's sources, benchmarks/average_weights.py), interpolation.json (an
interpolated model's two sources, benchmarks/interpolate_weights.py) and init_from.json (the
weights a fine-tuned run started from) into
src/nucseg/data/models/<name>/, removes those the run lacks (a previous model's), and refuses
weights over 16 MiB. Replacing a bundled model needs --overwrite. Adds the training images'
microns per pixel to thresholds.json (``mpp``, 0.25 for MoNuSeg's 40x) and writes about.json
(the run, recipe, normaliser, post-processing, the images it was tuned on, how it was chosen and
the bundling commit). Then writes the folder's
SHA256SUMS (nucseg.provenance.write_manifest; tests/test_bundled_model.py checks it), which
result JSONs are compared with.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from nucseg.io import atomic_write
from nucseg.provenance import provenance, write_manifest

FILES = ("model.safetensors", "config.json", "thresholds.json", "normaliser.json", "history.csv",
         "loss.png", "soup.json", "init_from.json", "interpolation.json")  # fmt: skip
MAX_BYTES = 16 * 2**20
DEST = Path(__file__).resolve().parents[1] / "src" / "nucseg" / "data" / "models"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--name", default="default")
    parser.add_argument("--overwrite", action="store_true", help="replace a bundled model")
    parser.add_argument(
        "--mpp", type=float, default=0.25, help="microns per pixel of the training images (40x)"
    )
    parser.add_argument("--chosen-by", help="how the model was chosen (recorded in about.json)")
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
    thresholds = json.loads((target / "thresholds.json").read_text())
    thresholds["mpp"] = args.mpp  # nucseg.slide.run.model_mpp reads it
    with atomic_write(target / "thresholds.json", overwrite=True) as tmp:
        tmp.write_text(json.dumps(thresholds, indent=1) + "\n")
    with atomic_write(target / "about.json", overwrite=True) as tmp:
        tmp.write_text(json.dumps(describe(args.run, target, args), indent=1) + "\n")
    print(f"bundled {args.run} as {target}; wrote {write_manifest(target)}")


def describe(run: Path, target: Path, args: argparse.Namespace) -> dict:
    """What the bundled model is: its run, recipe, normaliser, post-processing and their origin."""
    config = json.loads((target / "config.json").read_text())
    thresholds = json.loads((target / "thresholds.json").read_text())
    init = target / "init_from.json"
    soup = target / "soup.json"
    mix = target / "interpolation.json"
    return {
        "run": str(run),
        "recipe": {
            k: config.get(k)
            for k in (
                "model",
                "num_classes",
                "dataset",
                "split",
                "val_images",
                "stain",
                "lr",
                "steps",
                "time_budget_s",
                "seed",
                "sources",
                "primary_weight",
                "type_classes",
            )
        },  # fmt: skip
        "trained_steps": _history_steps(target / "history.csv"),
        "initialised_from": json.loads(init.read_text()) if init.is_file() else None,
        "averaged_from": json.loads(soup.read_text()) if soup.is_file() else None,
        "members": _members(soup) if soup.is_file() else None,
        "interpolated_from": json.loads(mix.read_text()) if mix.is_file() else None,
        "stain_normaliser": (
            json.loads((target / "normaliser.json").read_text())["name"]
            if (target / "normaliser.json").is_file()
            else None
        ),  # fmt: skip
        "postprocess": {"method": thresholds["method"], "params": thresholds["params"]},
        "tuned_on": thresholds.get("validation_images"),
        "predict": thresholds.get("predict"),
        "mpp": args.mpp,
        "chosen_by": args.chosen_by,
        "bundled_by": provenance(),
    }


def _members(soup: Path) -> dict[str, dict] | None:
    """Per averaged run (when its folder is here): its recipe's stain settings, its steps and
    the weights it was fine-tuned from, so that a soup's about.json says what went into it."""
    members = {}
    for member in json.loads(soup.read_text()).get("runs", []):
        folder = Path(member["path"])
        if not (folder / "config.json").is_file():
            continue
        config = json.loads((folder / "config.json").read_text())
        init = folder / "init_from.json"
        members[member["path"]] = {
            "steps": _history_steps(folder / "history.csv"),
            "stain": config.get("stain"),
            "stain_after_augment": config.get("stain_after_augment", False),
            "augment": "strong stain" if config.get("augment", {}).get("p_stain") else "default",
            "initialised_from": json.loads(init.read_text()) if init.is_file() else None,
        }
    return members or None


def _history_steps(path: Path) -> int | None:
    if not path.is_file():
        return None
    return max(0, len(path.read_text().strip().splitlines()) - 1)


if __name__ == "__main__":
    main()
