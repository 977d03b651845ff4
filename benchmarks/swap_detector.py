"""The red/blue swap detector (nucseg.quality.swap_score) on every genuine image and its swap.

    python benchmarks/swap_detector.py          # writes results/stain/swap_detector.json

Each image of MoNuSeg (44), TNBC (50), CoNSeP (41), CPM-15 (15) and DSB-2018 stained (107) is
scored as it is and with its red and blue channels exchanged (``image[..., ::-1]``). The
detector must not fire (score < 0) on a genuine image and must fire on every swapped one. The
record also gives the stain check that quality.stain_remedy and quality.assess combine with it
(the H/E sparsity ratio of quality.stain_check, < 0.9 flags) and the two together, as they
decide. ``perturbed`` counts the genuine images on which the detector fires once they are
halved (area averaging, as a 20x scan of a 40x field), saved as JPEG at quality 75, or cropped
to their top-left 256 x 256 pixels: how far the calibration carries. No model is run.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import cv2
import numpy as np

from nucseg import datasets, quality
from nucseg.io import atomic_write
from nucseg.provenance import provenance

OUT = Path("results/stain/swap_detector.json")
DATASETS = ("monuseg", "tnbc", "consep", "cpm15", "dsb2018-he")


def _score(image: np.ndarray) -> dict[str, float | None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, ratio = quality.stain_check(image)
    swap = quality.swap_score(image)
    cues = quality._swap_cues(image)
    return {
        "swap_score": None if swap is None else round(swap, 4),
        "cues": None if cues is None else [round(c, 5) for c in cues],
        "sparsity_ratio": None if ratio is None else round(ratio, 4),
        "flagged": quality.swapped_stains(ratio, swap) is not None,
    }


def _perturbed(image: np.ndarray) -> dict[str, np.ndarray]:
    """The image halved, as JPEG at quality 75, and its top-left 256 x 256 crop."""
    half = cv2.resize(
        image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_AREA
    )
    _, buffer = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 75])
    jpeg = cv2.imdecode(buffer, cv2.IMREAD_COLOR)[..., ::-1]
    return {"half": half, "jpeg75": jpeg, "crop256": image[:256, :256]}


def _summary(rows: dict[str, dict], side: str) -> dict[str, object]:
    scores = [r[side]["swap_score"] for r in rows.values()]
    known = [s for s in scores if s is not None]
    fired = sum(s < 0 for s in known)
    worst = min(known) if side == "genuine" else max(known)
    worst_id = next(k for k, r in rows.items() if r[side]["swap_score"] == worst)
    return {
        "images": len(scores),
        "no_score": len(scores) - len(known),
        "swap_fired": fired,
        "worst_score": worst,
        "worst_image": worst_id,
        "combined_flagged": sum(r[side]["flagged"] for r in rows.values()),
    }


def weight_window(cues: np.ndarray) -> list[float] | None:
    """The weights (steps of 0.01) at which the score is > 0 on every genuine image's ``cues``
    (rows: nuclear contrast, colour lean), the scales kept; None if no weight is."""
    scaled = cues / np.asarray(quality.SWAP_SCALES)[:, None]
    good = [w for w in np.arange(0, 1.001, 0.01) if (w * scaled[0] + (1 - w) * scaled[1]).min() > 0]
    return [round(float(min(good)), 2), round(float(max(good)), 2)] if good else None


def main() -> None:
    origin = provenance()
    start = time.perf_counter()
    record: dict[str, object] = {"datasets": {}, "provenance": origin}
    for name in DATASETS:
        rows = {}
        for image_id in datasets.ids(name, split="all"):
            image = datasets.load_sample(name, image_id).image
            rows[image_id] = {
                "genuine": _score(image),
                "swapped": _score(np.ascontiguousarray(image[..., ::-1])),
                "perturbed": {
                    kind: quality.swap_score(np.ascontiguousarray(pixels))
                    for kind, pixels in _perturbed(image).items()
                },
            }
        record["datasets"][name] = {
            "genuine": _summary(rows, "genuine"),
            "swapped": _summary(rows, "swapped"),
            "images": rows,
        }
        record["datasets"][name]["perturbed_fired"] = {
            kind: sum((r["perturbed"][kind] or 0) < 0 for r in rows.values())
            for kind in ("half", "jpeg75", "crop256")
        }
        g, s = record["datasets"][name]["genuine"], record["datasets"][name]["swapped"]
        print(
            f"{name}: genuine {g['swap_fired']}/{g['images']} fired (lowest score "
            f"{g['worst_score']:.3f}, {g['worst_image']}), swapped {s['swap_fired']}/"
            f"{s['images']} fired (highest {s['worst_score']:.3f}); with the sparsity check: "
            f"genuine {g['combined_flagged']} flagged, swapped {s['combined_flagged']}; genuine "
            f"perturbed, fired: {record['datasets'][name]['perturbed_fired']}"
        )
    cues = {
        name: np.array(
            [r["genuine"]["cues"] for r in d["images"].values() if r["genuine"]["cues"]]
        ).T
        for name, d in record["datasets"].items()
    }
    everything = np.concatenate(list(cues.values()), axis=1)
    record["weight"] = quality.SWAP_WEIGHT
    record["weight_window"] = weight_window(everything)
    record["scales_measured"] = np.median(np.abs(everything), axis=1).round(4).tolist()
    # the weight window each set allows alone: where a set's window misses the weight, a weight
    # chosen without that set would have failed on it
    record["weight_window_by_dataset"] = {name: weight_window(c) for name, c in cues.items()}
    print(
        f"weights separating all genuine images: {record['weight_window']} (used "
        f"{quality.SWAP_WEIGHT}); per dataset: {record['weight_window_by_dataset']}"
    )
    record["seconds"] = round(time.perf_counter() - start, 1)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(OUT, overwrite=True) as tmp:
        tmp.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
