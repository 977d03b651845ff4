"""``nucseg quantise MODEL``: an int8 network for a model folder, checked on its validation images.

1. Calibration: ``tiles`` tiles of the model's tile size cut (seeded) from the model's *training*
   images (its config's sources, each source's share by its training weight, never a validation
   image), at the model's resolution and through its stain normaliser if it has one: what the
   network sees at prediction.
2. NNCF quantises the fp32 OpenVINO export (:func:`nucseg.backends.int8.quantise`).
3. The fp32 and int8 networks segment the model's validation images (the images its training
   held out, per source); the int8 network passes if its mean over sources of the per-source mean
   AJI is at most :data:`nucseg.backends.int8.TOLERANCE` below fp32's.
4. ``int8/`` (``model.xml``, ``model.bin``, ``int8.json``: the weights' SHA-256, the calibration,
   both validation scores, ``passes``) is written beside the weights (for a model bundled in the
   package: in the user's cache, :func:`nucseg.backends.int8.folder_for`), under a temporary
   name then renamed; the folder's ``SHA256SUMS`` is rewritten if it has one.

It needs the datasets the model was trained on (``NUCSEG_DATA``) and NNCF (``pip install nncf``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def _config(folder: Path) -> Any:
    from nucseg.training.config import TrainConfig

    path = folder / "config.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{folder}: no config.json, so its training and validation images are unknown"
        )
    return TrainConfig.from_dict(json.loads(path.read_text()))


def calibration_tiles(
    config: Any, normaliser: Any = None, *, count: int = 128, tile: int = 256, seed: int = 0
) -> tuple[list[np.ndarray], dict[str, int]]:
    """``count`` ``(1, tile, tile, 3) uint8`` tiles from the training images of ``config``'s
    sources (each source's share by its weight), and how many came from each source."""
    from nucseg import datasets
    from nucseg.tiling import pad_to
    from nucseg.training.data import _at_scale, source_splits

    splits = source_splits(config)
    weights = np.array([float(s["weight"]) for s in config.all_sources])
    shares = np.floor(count * weights / weights.sum()).astype(int)
    shares[np.argmax(weights)] += count - int(shares.sum())
    rng = np.random.default_rng(seed)
    tiles, used = [], {}
    for (name, ids, val), share in zip(splits, shares, strict=True):
        train = [i for i in ids if i not in val]
        if share <= 0 or not train:
            continue
        picks = rng.choice(len(train), size=int(share), replace=True)
        images: dict[int, np.ndarray] = {}
        for pick in picks:
            if pick not in images:
                sample = _at_scale(datasets.load_sample(name, train[pick]), config.mpp)
                image = sample.image
                if normaliser is not None:
                    image = normaliser.transform(image)
                images[pick], _ = pad_to(image, (tile, tile))
            image = images[pick]
            r = int(rng.integers(0, image.shape[0] - tile + 1))
            c = int(rng.integers(0, image.shape[1] - tile + 1))
            tiles.append(np.ascontiguousarray(image[None, r : r + tile, c : c + tile]))
        used[name] = int(share)
    return tiles, used


def _validation_scores(predictor: Any, config: Any) -> dict[str, Any]:
    """Mean AJI per source on the run's validation images and the mean over sources, segmented
    as ``nucseg evaluate`` segments them."""
    from nucseg import datasets
    from nucseg.pipeline import evaluate
    from nucseg.slide.images import ImageSegmenter
    from nucseg.training.data import source_splits

    segmenter = ImageSegmenter(predictor, model_mpp=config.mpp)

    per_source = {}
    for name, ids, val in source_splits(config):
        chosen = [i for i in ids if i in val]
        if not chosen:
            continue
        samples = (datasets.load_sample(name, i) for i in chosen)
        result = evaluate(segmenter, samples, total=len(chosen), progress=False,
                          model_mpp=config.mpp)  # fmt: skip
        per_source[name] = {"images": len(chosen), "aji": float(result["aji"])}
    if not per_source:
        raise ValueError("the model's training held out no validation image to check int8 on")
    mean = float(np.mean([s["aji"] for s in per_source.values()]))
    return {"sources": per_source, "source_mean_aji": mean}


def quantise_model(
    folder: str | os.PathLike,
    *,
    tiles: int = 128,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Make, check and write ``folder/int8/`` (see the module docstring); returns its record."""
    import openvino as ov

    from nucseg.backends import int8
    from nucseg.backends.openvino_runtime import OpenVINOBackend
    from nucseg.infer import Predictor
    from nucseg.provenance import MANIFEST, provenance, write_manifest

    folder = Path(folder)
    final = int8.folder_for(folder)
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final} exists (use --overwrite to make it again)")
    config = _config(folder)
    start = time.perf_counter()
    reference = Predictor.load(folder, backend="openvino", precision="fp32")
    fp32 = reference.backend
    calibration, used = calibration_tiles(
        config, reference.normaliser, count=tiles, tile=int(reference.options["tile"]), seed=seed
    )
    log.info("quantising %s on %d calibration tiles", folder, len(calibration))
    network = int8.quantise(fp32.network, calibration)
    tmp = final.with_name(f".{final.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        ov.save_model(network, str(tmp / "model.xml"), compress_to_fp16=False)
        quantised = Predictor.load(folder, backend="openvino", precision="fp32")
        quantised._backend = OpenVINOBackend(
            lambda: quantised.model, num_classes=quantised.num_classes,
            type_channels=quantised.type_channels, precision="int8", tta=quantised.options["tta"],
            weights_sha256=quantised.weights_sha256, int8_network=tmp / "model.xml",
        )  # fmt: skip
        scores = {"fp32": _validation_scores(reference, config)}
        scores["int8"] = _validation_scores(quantised, config)
        gap = scores["fp32"]["source_mean_aji"] - scores["int8"]["source_mean_aji"]
        import nncf

        record = {
            "weights_sha256": reference.weights_sha256,
            "passes": bool(gap <= int8.TOLERANCE),
            "validation": {**scores, "gap": float(gap), "tolerance": int8.TOLERANCE,
                           "rule": "fp32 minus int8 source-mean validation AJI <= tolerance"},
            "calibration": {"tiles": len(calibration), "seed": seed, "per_source": used,
                            "tile": int(reference.options["tile"]),
                            "images": "training images of the model's sources, never validation"},
            "nncf": nncf.__version__,
            "openvino": ov.get_version(),
            "seconds": round(time.perf_counter() - start, 1),
            "provenance": provenance(models=[folder]),
        }  # fmt: skip
        (tmp / "int8.json").write_text(json.dumps(record, indent=1) + "\n")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if final.parent == folder and (folder / MANIFEST).is_file():
        write_manifest(folder)
    record["folder"] = str(final)
    return record
