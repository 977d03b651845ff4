"""Post-processing tuned on the validation images: at the end of training (:func:`finish`) and
again on a finished run (:func:`retune`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from nucseg.training.config import TrainConfig
from nucseg.training.data import TrainingData, validation_samples
from nucseg.training.outputs import _write_json, write_history

#: Post-processing parameters searched on the validation images at the end of training.
WATERSHED_GRID = {
    "interior_threshold": [0.4, 0.5, 0.6, 0.7],
    "foreground_threshold": [0.4, 0.5, 0.6],
    "min_size": [10, 30],
}


def finish(
    run_dir: Path,
    model: torch.nn.Module,
    data: TrainingData,
    config: TrainConfig,
    history: list[dict[str, Any]],
    *,
    progress: bool = True,
    ema: torch.nn.Module | None = None,
) -> None:
    """Write the final weights, normaliser, history, loss curve and tuned post-processing.

    With ``ema`` (the moving average of the weights) both networks are tuned on the validation
    images and the one of the higher validation score (``_validation_score``) is saved; a tie
    keeps the trained weights.
    """
    from nucseg.models import save_model

    if data.normaliser is not None:
        _write_json(run_dir / "normaliser.json", data.normaliser.to_dict())
    write_history(run_dir, history)
    record = tune_postprocess(model, data.val, config=config, progress=progress)
    if ema is not None:
        ema_record = tune_postprocess(ema, data.val, config=config, progress=progress)
        candidates = (("trained", record), ("ema", ema_record))
        best = {name: _validation_score(r) for name, r in candidates}
        if best["ema"] > best["trained"]:
            model, record = ema, ema_record
        record["weights"] = "ema" if model is ema else "trained"
        record["compared_weights"] = [{"weights": k, "score": v} for k, v in best.items()]
    save_model(run_dir / "model.safetensors", model, fp16=config.fp16_weights)
    _write_json(run_dir / "thresholds.json", record)


def _validation_score(record: dict[str, Any]) -> float:
    """The validation score of a tuned record's chosen parameters: its rule's objective (AJI for
    the watershed and distance rules, precision for the paper's rule); -1 without validation."""
    for row in record.get("tuning", []):
        chosen = row["params"] if "params" in row else {"threshold": row["threshold"]}
        if chosen == record["params"]:
            return float(row.get("objective", row["aji"]))
    return -1.0


def tune_postprocess(
    model: torch.nn.Module,
    val: list[tuple[str, np.ndarray, np.ndarray]],
    *,
    config: TrainConfig,
    progress: bool = True,
) -> dict[str, Any]:
    """Choose the post-processing parameters that maximise AJI on the validation images.

    The maps are predicted as they will be at use (same tiles and TTA), so the thresholds fit
    them. Returns the ``thresholds.json`` record: method, params, prediction settings, the table.
    """
    from nucseg.infer import predict_maps

    settings = {"tile": config.predict_tile, "overlap": config.predict_overlap, "tta": config.tta}
    maps, truths = [], []
    kept = config.num_classes + int(config.distance)  # not the type head's channels
    for _, image, labels in tqdm(val, desc="validate", disable=not progress):
        maps.append(
            predict_maps(model, image, num_classes=config.num_classes, **settings)[..., :kept]
        )
        truths.append(labels)
    record: dict[str, Any] = {"validation_images": [v[0] for v in val], "predict": settings}
    return _tune_on_maps(record, maps, truths, config.num_classes)


#: Parameters of the ``"distance"`` rule searched when the model predicts a distance map.
DISTANCE_GRID = {"threshold": [0.4, 0.5, 0.6], "h": [0.1, 0.2, 0.3, 0.4], "min_size": [10, 30]}


def _tune_on_maps(
    record: dict[str, Any], maps: list[np.ndarray], truths: list[np.ndarray], num_classes: int
) -> dict[str, Any]:
    """Fill ``record`` with the post-processing tuned on predicted ``maps`` against ``truths``.

    A 3-class model uses the marker watershed; with a distance channel the ``"distance"`` rule is
    tuned too and the rule of the higher validation AJI kept (``record["compared"]`` lists both).
    """
    from nucseg.postprocess import rule_inputs, tune_paper_threshold, tune_watershed

    if not maps:
        record.update(method="watershed" if num_classes == 3 else "paper", params={})
        return record
    if num_classes == 2 and maps[0].shape[2] == 2:
        foreground = [rule_inputs(m, num_classes=2, method="paper") for m in maps]
        threshold, table = tune_paper_threshold(foreground, truths)
        record.update(method="paper", params={"threshold": threshold}, tuning=table)
        return record
    grids = {"watershed": WATERSHED_GRID} if num_classes == 3 else {}
    if maps[0].shape[2] > num_classes:
        grids["distance"] = DISTANCE_GRID
    results = {}
    for method, grid in grids.items():
        inputs = [rule_inputs(m, num_classes=num_classes, method=method) for m in maps]
        params, table = tune_watershed(inputs, truths, grid=grid, method=method)
        best = max(row["aji"] for row in table)
        results[method] = (best, params, table)
    method = max(results, key=lambda name: results[name][0])  # first of a tie: watershed
    _, params, table = results[method]
    record.update(method=method, params=params, tuning=table)
    if len(results) > 1:
        record["compared"] = [
            {"method": m, "aji": r[0], "params": r[1]} for m, r in results.items()
        ]
    return record


def retune(
    run_dir: str | Path,
    *,
    tta: str | None = None,
    tile: int | None = None,
    overlap: float | None = None,
    progress: bool = True,
    params_from: str | Path | None = None,
) -> dict:
    """Re-tune a finished run's post-processing; rewrites thresholds.json.

    ``tta``, ``tile`` and ``overlap`` override the run's prediction settings (and are stored in
    the new thresholds.json, so the model then predicts that way by default).

    ``params_from`` names another run (or model folder) whose tuned post-processing and
    prediction settings are copied instead of tuning: for a run trained on every image
    (``val_images`` 0), which has no validation images of its own, refitted with the recipe
    of a run that had them. The record names the source (``params_from``) and its validation
    images (``source_validation_images``).
    """
    from nucseg.models import load_model
    from nucseg.stain import read_normaliser

    run_dir = Path(run_dir)
    values = json.loads((run_dir / "config.json").read_text())
    if params_from is not None:
        if any(v is not None for v in (tta, tile, overlap)):
            raise ValueError(
                "params_from copies the prediction settings too: drop tta/tile/overlap"
            )
        source = Path(params_from)
        source_config = json.loads((source / "config.json").read_text())
        if source_config["num_classes"] != values["num_classes"]:
            raise ValueError(
                f"{source} predicts {source_config['num_classes']} classes and {run_dir} "
                f"{values['num_classes']}: its post-processing does not apply"
            )
        copied = json.loads((source / "thresholds.json").read_text())
        record = {
            "validation_images": [],
            "predict": copied["predict"],
            "method": copied["method"],
            "params": copied["params"],
            "params_from": str(source),
            "source_validation_images": copied["validation_images"],
        }
        _write_json(run_dir / "thresholds.json", record)
        return record
    overrides = {"tta": tta, "predict_tile": tile, "predict_overlap": overlap}
    values.update({k: v for k, v in overrides.items() if v is not None})
    config = TrainConfig.from_dict(values)
    normaliser = read_normaliser(run_dir)
    val = []
    for sample in validation_samples(config):  # every source's, as training tuned on
        image = sample.image if normaliser is None else normaliser.transform(sample.image)
        val.append((sample.id, image, sample.labels))
    model = load_model(run_dir / "model.safetensors")
    record = tune_postprocess(model, val, config=config, progress=progress)
    _write_json(run_dir / "thresholds.json", record)
    return record
