"""Agreement of the network backends: label images of the 8 MoNuSeg breast test images from
OpenVINO and torch, each at fp32 and bf16, scored against torch fp32 (the reference) with AJI,
and each against the ground truth.

Every image goes through the engine as ``nucseg segment`` does (:func:`nucseg.pipeline.
make_segmenter`, the bundled model's settings). Writes results/backends/agreement.json.

    python benchmarks/backend_agreement.py
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from nucseg import datasets
from nucseg.atomic import write_json
from nucseg.metrics import aji
from nucseg.pipeline import make_segmenter, provenance, resolve_model

#: (backend, precision) pairs compared; the first is the reference.
SETTINGS = (("torch", "fp32"), ("openvino", "fp32"), ("torch", "bf16"), ("openvino", "bf16"))


def labels_by_setting(model: str, samples: list, settings=SETTINGS) -> dict[str, list]:
    """Labels of every sample under each (backend, precision), keyed ``"backend/precision"``."""
    out = {}
    for backend, precision in settings:
        segment = make_segmenter(model=model, backend=backend, precision=precision)
        start = time.perf_counter()
        out[f"{backend}/{precision}"] = [segment(s.image) for s in samples]
        print(f"{backend}/{precision}: {time.perf_counter() - start:.1f} s", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--out", type=Path, default=Path("results/backends/agreement.json"))
    args = parser.parse_args()
    origin = provenance(models=[resolve_model(args.model)])
    name, split = datasets.resolve_eval_dataset("monuseg-breast")
    ids = datasets.ids(name, split=split)
    samples = [datasets.load_sample(name, i) for i in ids]
    labels = labels_by_setting(args.model, samples)
    reference = labels["torch/fp32"]
    record: dict = {"benchmark": "backend agreement, MoNuSeg breast test (8 images)",
                    "images": list(ids), "reference": "torch/fp32", "settings": {}}  # fmt: skip
    for key, found in labels.items():
        vs_ref = [aji(r, f) for r, f in zip(reference, found, strict=True)]
        vs_truth = [aji(s.labels, f) for s, f in zip(samples, found, strict=True)]
        record["settings"][key] = {
            "aji_vs_reference": vs_ref,
            "aji_vs_reference_min": min(vs_ref),
            "aji_vs_reference_mean": float(np.mean(vs_ref)),
            "aji_vs_truth_mean": float(np.mean(vs_truth)),
            "aji_vs_truth": vs_truth,
        }
        print(f"{key:16s} AJI vs torch/fp32 min {min(vs_ref):.4f} mean {np.mean(vs_ref):.4f}; "
              f"vs truth {np.mean(vs_truth):.4f}")  # fmt: skip
    record["provenance"] = origin
    write_json(args.out, record, overwrite=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
