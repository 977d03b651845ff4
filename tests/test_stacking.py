"""U-Net Ensemble and GB U-Net: tiny stage-one U-Nets, a few stage-two steps, predictions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nucseg.infer import Predictor
from nucseg.models import create_model
from nucseg.stacking import (
    EnsembleSegmenter,
    GBConfig,
    GBUNetSegmenter,
    stage_one_features,
    train_gb_unet,
)
from nucseg.train import TrainConfig, fit

TINY = {"model": "unet-resnet18", "num_classes": 2, "decoder_channels": (32, 16, 16, 8, 8),
        "limit_images": 2, "val_images": 1, "stain": None, "tile": 64, "batch_size": 2,
        "steps": 2, "warmup_steps": 1, "checkpoint_every_s": 1e9,
        "predict_overlap": 0.25}  # fmt: skip


@pytest.fixture(scope="module")
def stage_one(data_root, tmp_path_factory):
    folder = tmp_path_factory.mktemp("stage_one")
    runs = []
    for seed in range(3):
        run = folder / f"unet{seed}"
        fit(TrainConfig.from_dict({**TINY, "seed": seed}), run, progress=False)
        runs.append(str(run))
    return runs


def test_gb_unet_second_stage_shapes():
    model = create_model("gb-unet", num_classes=2, in_channels=9)
    assert model(torch.zeros(2, 9, 64, 64)).shape == (2, 2, 64, 64)
    with pytest.raises(ValueError, match="encoder_weights"):
        create_model("gb-unet", num_classes=2, encoder_weights="imagenet")


def test_ensemble_is_the_mean_of_the_members(stage_one):
    predictors = [Predictor.load(run) for run in stage_one]
    image = np.random.default_rng(0).integers(0, 255, (130, 140, 3), dtype=np.uint8)
    ensemble = EnsembleSegmenter(predictors, {"threshold": 0.5})
    expected = np.mean([p.predict_maps(image)[..., 1] for p in predictors], axis=0)
    np.testing.assert_allclose(ensemble.foreground(image), expected, rtol=1e-6, atol=1e-6)
    labels = ensemble(image)
    assert labels.shape == image.shape[:2] and labels.dtype == np.int32


def test_stage_one_features_stack_image_and_logits(stage_one):
    predictors = [Predictor.load(run) for run in stage_one]
    image = np.random.default_rng(1).integers(0, 255, (96, 96, 3), dtype=np.uint8)
    features = stage_one_features(predictors, image)
    assert features.shape == (96, 96, 3 + 3 * 2) and features.dtype == np.float32
    logits = predictors[1].predict_maps(image, softmax=False)
    np.testing.assert_allclose(features[..., 5:7], logits, rtol=1e-6)
    assert not np.allclose(logits.sum(-1), 1.0)  # logits, not probabilities


def test_gb_config_from_dict_makes_tuples_and_checks_keys():
    config = GBConfig.from_dict({"widths": [8, 16], "steps": 2, "time_budget_s": None})
    assert config.widths == (8, 16)
    with pytest.raises(KeyError, match="GB U-Net config key.*'drop'"):
        GBConfig.from_dict({"drop": 0.5})
    with pytest.raises(ValueError, match="exactly one"):
        GBConfig(steps=2)


def test_gb_unet_trains_and_segments(stage_one, tmp_path):
    config = GBConfig(stage_one=stage_one, widths=(8, 16, 32), steps=2, time_budget_s=None,
                      batch_size=2, tile=64)  # fmt: skip
    run = train_gb_unet(config, tmp_path / "gb", progress=False)
    assert (run / "history.csv").read_text().count("\n") == 3 and (run / "loss.png").is_file()
    record = json.loads((run / "thresholds.json").read_text())
    assert record["method"] == "paper" and "threshold" in record["params"]
    segmenter = GBUNetSegmenter.load(run)
    image = np.random.default_rng(2).integers(0, 255, (100, 120, 3), dtype=np.uint8)
    labels = segmenter(image)
    assert labels.shape == (100, 120) and labels.dtype == np.int32
