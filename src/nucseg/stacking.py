"""Combining U-Nets as Lagree et al. (2021): the U-Net Ensemble and the stacked GB U-Net.

- :class:`EnsembleSegmenter`: the pixel-wise mean of the probability maps of several trained
  U-Nets (the paper: VGG-19, ResNet-101 and DenseNet-121), then the paper's post-processing with
  a threshold tuned on validation images.
- GB U-Net (:func:`train_gb_unet`, :class:`GBUNetSegmenter`): a second-stage U-Net
  (:mod:`nucseg.models.plain`) whose input is the colour-normalised image concatenated with the
  three first-stage U-Nets' last-layer (pre-softmax) maps. Stage two trains with the same
  combined loss and weight maps, on stage-one outputs for the training images only.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from nucseg._checks import check_image, check_steps_or_budget, dataclass_from_dict
from nucseg.infer import MEAN, STD, Predictor, autocast, default_device
from nucseg.tiling import MapStitcher, pad_to, tile_grid

log = logging.getLogger(__name__)


def _paper_labels(foreground: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    from nucseg.postprocess import to_instances

    return to_instances(foreground, method="paper", **params)


def _tune(maps: list[np.ndarray], truths: list[np.ndarray]) -> dict[str, Any]:
    from nucseg.postprocess import tune_paper_threshold

    threshold, table = tune_paper_threshold(maps, truths)
    return {"method": "paper", "params": {"threshold": threshold}, "tuning": table}


class EnsembleSegmenter:
    """Mean of the foreground probability of several 2-class :class:`Predictor` s, post-processed.

    Parameters
    ----------
    predictors : list of Predictor
        Each normalises the image its own way and predicts its probability maps.
    params : dict, optional
        Parameters of the paper's post-processing (``threshold`` ...); see :meth:`tune`.
    """

    def __init__(self, predictors: list[Predictor], params: dict[str, Any] | None = None) -> None:
        if not predictors:
            raise ValueError("an ensemble needs at least one predictor")
        self.predictors = predictors
        self.params = dict(params or {})

    def foreground(self, image: np.ndarray) -> np.ndarray:
        """Mean foreground probability, ``(H, W)`` float32."""
        maps = [p.predict_maps(image)[..., 1 : p.num_classes].sum(axis=-1) for p in self.predictors]
        return np.mean(maps, axis=0).astype(np.float32)

    def tune(self, samples: list[tuple[str, np.ndarray, np.ndarray]]) -> dict[str, Any]:
        """Choose the threshold on validation ``(id, image, labels)``; returns the record."""
        record = _tune([self.foreground(im) for _, im, _ in samples], [lb for _, _, lb in samples])
        self.params = record["params"]
        return record

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return _paper_labels(self.foreground(image), self.params)


# --- GB U-Net -------------------------------------------------------------------------------------


def stage_one_features(predictors: list[Predictor], image: np.ndarray) -> np.ndarray:
    """GB U-Net input: the normalised image (standardised) and each predictor's logits.

    Returns ``(H, W, 3 + sum of the predictors' channels)`` float32. The image channels are
    normalised with the first predictor's stain normaliser (all stage-one U-Nets share the
    recipe) and standardised with ImageNet statistics.
    """
    image = check_image(image)
    first = predictors[0]
    normalised = image if first.normaliser is None else first.normaliser.transform(image)
    rgb = (normalised.astype(np.float32) / 255.0 - np.float32(MEAN)) / np.float32(STD)
    logits = [p.predict_maps(image, softmax=False) for p in predictors]
    return np.concatenate([rgb, *logits], axis=-1).astype(np.float32)


@torch.inference_mode()
def predict_feature_maps(
    model: torch.nn.Module,
    features: np.ndarray,
    *,
    tile: int = 256,
    overlap: float = 0.5,
    batch_size: int = 8,
    device: torch.device | None = None,
) -> np.ndarray:
    """Tiled softmax maps of a network over a float ``(H, W, C)`` feature image."""
    device = default_device() if device is None else device
    padded, crop = pad_to(features, (tile, tile))
    grid = tile_grid(padded.shape[:2], tile=tile, overlap=overlap)
    stitcher = MapStitcher(padded.shape[:2], grid=grid)
    model.eval()
    with autocast(device):
        for start in range(0, len(grid), batch_size):
            batch = grid[start : start + batch_size]
            x = torch.from_numpy(np.stack([padded[s] for s in batch])).to(device)
            x = x.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
            out = torch.softmax(model(x).float(), dim=1).permute(0, 2, 3, 1).cpu().numpy()
            for tile_map, slices in zip(out, batch, strict=True):
                stitcher.add(tile_map, slices)
    return np.ascontiguousarray(stitcher.result()[crop], dtype=np.float32)


@dataclass
class GBConfig:
    """Stage-two recipe: the stage-one run folders and the training of the second U-Net."""

    stage_one: list[str] = field(default_factory=list)
    widths: tuple[int, ...] = (32, 64, 128, 256, 512)
    dropout: float = 0.1
    tile: int = 256
    overlap: float = 0.1
    batch_size: int = 8
    lr: float = 1e-4
    steps: int | None = None
    time_budget_s: float | None = 1200.0
    w0: float = 10.0
    sigma: float = 5.0
    seed: int = 0
    predict_overlap: float = 0.25

    def __post_init__(self) -> None:
        check_steps_or_budget(self.steps, self.time_budget_s)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> GBConfig:
        """Build from a dict (e.g. the ``gb_unet`` block of a reproduce config)."""
        return dataclass_from_dict(cls, values, what="GB U-Net config")


def _load_stage_one(folders: list[str]) -> list[Predictor]:
    predictors = [Predictor.load(folder, tta="none") for folder in folders]
    if any(p.num_classes != 2 for p in predictors):
        raise ValueError("GB U-Net stacks 2-class stage-one U-Nets (the paper's)")
    return predictors


def _dihedral(arrays: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    k, flip = int(rng.integers(4)), rng.random() < 0.5
    out = []
    for a in arrays:
        a = np.rot90(a, k)
        out.append(np.ascontiguousarray(a[:, ::-1] if flip else a))
    return out


def train_gb_unet(config: GBConfig, run_dir: str | Path, *, progress: bool = True) -> Path:
    """Train the second stage on stage-one outputs for the stage-one runs' training images.

    The training and validation images are those of the first stage-one run (its
    ``config.json``); the paper's post-processing threshold is tuned on the validation images.
    Writes ``model.safetensors``, ``config.json``, ``thresholds.json`` and ``history.csv``.
    """
    from nucseg import datasets
    from nucseg.losses import CombinedLoss
    from nucseg.models import create_model, save_model
    from nucseg.targets import unet_weight_map
    from nucseg.train import TrainConfig, _write_json, budgeted_steps, split_ids, write_history

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    predictors = _load_stage_one(config.stage_one)
    first = json.loads((Path(config.stage_one[0]) / "config.json").read_text())
    stage_config = TrainConfig.from_dict(first)
    ids, val_ids = split_ids(stage_config)
    features, targets, weights, val = [], [], [], []
    for image_id in tqdm(ids, desc="stage-one maps", disable=not progress):
        sample = datasets.load_sample(stage_config.dataset, image_id)
        x = stage_one_features(predictors, sample.image)
        if image_id in val_ids:
            val.append((x, sample.labels))
            continue
        features.append(x)
        targets.append((sample.labels > 0).astype(np.int64))
        weights.append(unet_weight_map(sample.labels, w0=config.w0, sigma=config.sigma))
    tiles = [(i, s) for i, x in enumerate(features)
             for s in tile_grid(x.shape[:2], tile=config.tile, overlap=config.overlap)]  # fmt: skip
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    device = default_device()
    model = create_model("gb-unet", num_classes=2, in_channels=features[0].shape[-1],
                         widths=list(config.widths), dropout=config.dropout)  # fmt: skip
    model = model.to(device).to(memory_format=torch.channels_last)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    loss_fn = CombinedLoss(num_classes=2)
    history = []
    model.train()
    loop = budgeted_steps(config.steps, config.time_budget_s, desc="train gb u-net",
                          progress=progress)  # fmt: skip
    for step, elapsed, bar in loop:
        batch = [tiles[i] for i in rng.integers(len(tiles), size=config.batch_size)]
        xs, ys, ws = [], [], []
        for index, s in batch:
            x, y, w = _dihedral([features[index][s], targets[index][s], weights[index][s]], rng)
            xs.append(x)
            ys.append(y)
            ws.append(w)
        x = torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).to(device)
        with autocast(device):
            logits = model(x.contiguous(memory_format=torch.channels_last))
        loss, parts = loss_fn(logits.float(), torch.from_numpy(np.stack(ys)).to(device),
                              torch.from_numpy(np.stack(ws)).to(device))  # fmt: skip
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        history.append({"step": step + 1, "elapsed_s": round(elapsed, 2), "loss": loss.item(),
                        **parts})  # fmt: skip
        bar.set_postfix(loss=f"{loss.item():.3f}")
    save_model(run_dir / "model.safetensors", model, fp16=True)
    config_record = dataclasses.asdict(config)
    _write_json(run_dir / "config.json", config_record)
    maps = [predict_feature_maps(model, x, overlap=config.predict_overlap)[..., 1] for x, _ in val]
    record = _tune(maps, [labels for _, labels in val]) if val else {"method": "paper",
                                                                      "params": {}}  # fmt: skip
    _write_json(run_dir / "thresholds.json", record)
    write_history(run_dir, history)
    return run_dir


class GBUNetSegmenter:
    """Stage-one U-Nets, then the GB U-Net, then the paper's post-processing."""

    def __init__(
        self, predictors: list[Predictor], model: torch.nn.Module, params: dict[str, Any],
        *, overlap: float = 0.25,
    ) -> None:  # fmt: skip
        self.predictors, self.model, self.params = predictors, model.eval(), dict(params)
        self.overlap = overlap

    @classmethod
    def load(cls, path: str | Path) -> GBUNetSegmenter:
        """Load a run folder of :func:`train_gb_unet` (the stage-one folders it names too)."""
        from nucseg.models import load_model

        folder = Path(path)
        config = json.loads((folder / "config.json").read_text())
        post = json.loads((folder / "thresholds.json").read_text())
        model = load_model(folder / "model.safetensors").to(default_device())
        return cls(_load_stage_one(config["stage_one"]), model, post["params"],
                   overlap=config.get("predict_overlap", 0.25))  # fmt: skip

    def foreground(self, image: np.ndarray) -> np.ndarray:
        features = stage_one_features(self.predictors, image)
        return predict_feature_maps(self.model, features, overlap=self.overlap)[..., 1]

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return _paper_labels(self.foreground(image), self.params)
