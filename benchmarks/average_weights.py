"""Average the weights of several runs of one network: a uniform "model soup".

    python benchmarks/average_weights.py runs/all36 src/nucseg/data/models/default \
        --settings-from src/nucseg/data/models/default --out runs/soup

Wortsman et al. 2022 ("Model soups", ICML) average networks fine-tuned from the same pretrained
weights; the average is one network, as large and as fast as each of them. Every run must hold
the same network (registry name and arguments). Floating-point tensors (weights and BatchNorm
statistics) are averaged; integer buffers (BatchNorm's step counters) are taken from the first
run. The output folder is a model folder: the averaged ``model.safetensors`` (fp16 when the first
run's config says so), the ``config.json``, ``normaliser.json`` and ``thresholds.json`` of
``--settings-from`` (its stain normaliser and post-processing), and ``soup.json`` naming the
sources and the SHA-256 of their weight files.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

from nucseg.atomic import write_json
from nucseg.models import load_model, save_model
from nucseg.provenance import file_sha256, provenance

SETTINGS = ("config.json", "normaliser.json", "thresholds.json")


def average_state_dicts(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The element-wise mean of float tensors; integer tensors from the first state dict."""
    if any(state.keys() != states[0].keys() for state in states):
        raise ValueError("the runs hold different networks: their weight names differ")
    averaged = {}
    for name, first in states[0].items():
        if first.is_floating_point():
            averaged[name] = torch.stack([s[name].float() for s in states]).mean(0).to(first.dtype)
        else:
            averaged[name] = first.clone()
    return averaged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+", help="run or model folders")
    parser.add_argument("--settings-from", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    if len(args.runs) < 2:
        raise SystemExit("name at least two runs to average")
    if args.out.exists() and not args.overwrite:
        raise SystemExit(f"{args.out} exists; pass --overwrite to replace it")
    models = [load_model(run / "model.safetensors") for run in args.runs]
    configs = {model.nucseg_config.to_json() for model in models}
    if len(configs) > 1:
        raise SystemExit(f"the runs hold different networks: {sorted(configs)}")
    soup = models[0]
    soup.load_state_dict(average_state_dicts([m.state_dict() for m in models]))
    fp16 = json.loads((args.runs[0] / "config.json").read_text()).get("fp16_weights", False)
    args.out.mkdir(parents=True, exist_ok=True)
    save_model(args.out / "model.safetensors", soup, {"soup_of": [str(r) for r in args.runs]},
               fp16=fp16)  # fmt: skip
    for name in SETTINGS:
        if (args.settings_from / name).is_file():
            shutil.copy2(args.settings_from / name, args.out / name)
    record = {
        "runs": [
            {"path": str(run), "sha256": file_sha256(run / "model.safetensors")}
            for run in args.runs
        ],
        "settings_from": str(args.settings_from),
    }
    record["provenance"] = provenance(models=args.runs)
    write_json(args.out / "soup.json", record, overwrite=True)
    print(f"averaged {len(models)} runs into {args.out}")


if __name__ == "__main__":
    main()
