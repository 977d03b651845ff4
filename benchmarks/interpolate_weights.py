"""Interpolate two networks that share their start: WiSE-FT.

    python benchmarks/interpolate_weights.py src/nucseg/data/models/default runs/ms-types-2 \\
        --alpha 0.5 --out runs/wise-0.5

Wortsman et al. 2022 ("Robust fine-tuning of zero-shot models", CVPR) interpolate the weights of
a model and of its fine-tuned descendant, ``(1 - alpha) * start + alpha * tuned``: the mix keeps
much of the start's accuracy where it was good and much of the fine-tuned model's where that was
better. Floating-point tensors (weights and BatchNorm statistics) are interpolated, integer
buffers taken from ``tuned``. Output channels that only ``tuned`` has (its nucleus-type head: the
last channels of the final convolution) are ``tuned``'s alone.

The output folder is a model folder with ``tuned``'s ``config.json`` (its stain handling and its
validation images) and its network; its ``thresholds.json`` is written by ``nucseg tune`` on
those validation images (``--no-tune`` copies ``tuned``'s instead), and ``interpolation.json``
names the two sources, ``alpha`` and the SHA-256 of their weight files.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from nucseg.atomic import write_json
from nucseg.models import load_model, save_model
from nucseg.provenance import file_sha256, provenance


def interpolate_state_dicts(
    start: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """``(1 - alpha) * start + alpha * tuned`` per float tensor; ``tuned``'s integer tensors.

    A tensor with more rows (output channels) in ``tuned`` than in ``start`` and otherwise the
    same shape is interpolated on ``start``'s rows and keeps ``tuned``'s extra rows as they are.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if start.keys() != tuned.keys():
        missing = sorted(set(start) ^ set(tuned))[:3]
        raise ValueError(f"the networks differ: weights {missing} are in only one of them")
    out = {}
    for name, t in tuned.items():
        s = start[name]
        if not t.is_floating_point():
            out[name] = t.clone()
            continue
        if s.shape != t.shape:
            if s.dim() != t.dim() or s.shape[1:] != t.shape[1:] or s.shape[0] > t.shape[0]:
                raise ValueError(f"{name}: shapes {tuple(s.shape)} and {tuple(t.shape)} differ")
            mixed = t.float().clone()
            k = s.shape[0]
            mixed[:k] = (1 - alpha) * s.float() + alpha * t[:k].float()
            out[name] = mixed.to(t.dtype)
        else:
            out[name] = ((1 - alpha) * s.float() + alpha * t.float()).to(t.dtype)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("start", type=Path, help="model or run folder the fine-tuning began from")
    parser.add_argument(
        "tuned", type=Path, help="the fine-tuned run folder (its settings are kept)"
    )
    parser.add_argument("--alpha", type=float, required=True, help="weight of the tuned network")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--no-tune", action="store_true", help="copy tuned's thresholds.json")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    if args.out.exists() and not args.overwrite:
        raise SystemExit(f"{args.out} exists; pass --overwrite to replace it")
    start = load_model(args.start / "model.safetensors")
    tuned = load_model(args.tuned / "model.safetensors")
    if start.nucseg_config.name != tuned.nucseg_config.name:
        raise SystemExit(
            f"different networks: {start.nucseg_config.name} and {tuned.nucseg_config.name}"
        )
    tuned.load_state_dict(
        interpolate_state_dicts(start.state_dict(), tuned.state_dict(), args.alpha)
    )
    config = json.loads((args.tuned / "config.json").read_text())
    args.out.mkdir(parents=True, exist_ok=True)
    save_model(
        args.out / "model.safetensors",
        tuned,
        {"interpolation_of": [str(args.start), str(args.tuned)], "alpha": args.alpha},
        fp16=config.get("fp16_weights", False),
    )
    shutil.copy2(args.tuned / "config.json", args.out / "config.json")
    shutil.copy2(args.tuned / "thresholds.json", args.out / "thresholds.json")
    record = {
        "start": {"path": str(args.start), "sha256": file_sha256(args.start / "model.safetensors")},
        "tuned": {"path": str(args.tuned), "sha256": file_sha256(args.tuned / "model.safetensors")},
        "alpha": args.alpha,
        "thresholds": "copied from tuned"
        if args.no_tune
        else "nucseg tune on the validation images",
        "provenance": provenance(models=[args.start, args.tuned]),
    }
    write_json(args.out / "interpolation.json", record, overwrite=True)
    if not args.no_tune:
        subprocess.run([sys.executable, "-m", "nucseg.cli", "tune", str(args.out)], check=True)
    print(f"interpolated {args.start} and {args.tuned} (alpha {args.alpha}) into {args.out}")


if __name__ == "__main__":
    main()
