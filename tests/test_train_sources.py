"""Multi-source training: sources at the model's scale, weighted draws, a masked type head."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nucseg.train import TrainConfig, fit
from nucseg.training.data import (
    UNKNOWN_TYPE,
    make_batch,
    prepare_data,
    tile_probabilities,
    type_map,
    weighted_batch_indices,
)

TINY = {"model": "unet-resnet18", "decoder_channels": (32, 16, 16, 8, 8), "limit_images": 1,
        "val_images": 0, "stain": None, "tile": 64, "overlap": 0.0, "batch_size": 4,
        "steps": 2, "warmup_steps": 1, "checkpoint_every_s": 1e9, "type_classes": 5,
        "sources": ({"dataset": "cpm15", "split": "20x", "weight": 1.0, "val_images": 6},),
        "primary_weight": 3.0}  # fmt: skip


def test_type_map_and_unknown_types():
    labels = np.array([[0, 1, 1], [2, 2, 0]], np.int32)
    assert type_map(labels, {1: 3, 2: 4}).tolist() == [[0, 3, 3], [4, 4, 0]]
    assert np.all(type_map(labels, None) == UNKNOWN_TYPE)


def test_tile_probabilities_share_each_weight_among_its_tiles():
    config = TrainConfig(**{k: v for k, v in TINY.items()})
    probs = tile_probabilities([0, 0, 0, 0, 1], config)  # 4 tiles of the primary, 1 of cpm15
    assert probs.sum() == pytest.approx(1.0)
    assert probs[:4].sum() == pytest.approx(0.75) and probs[4] == pytest.approx(0.25)
    a = weighted_batch_indices(5, probs, batch_size=8, seed=0)
    assert np.array_equal(a, weighted_batch_indices(5, probs, batch_size=8, seed=0))
    with pytest.raises(ValueError, match="cpm15"):
        tile_probabilities([0, 0], config)


def test_sources_are_scaled_split_and_typed(data_root):
    config = TrainConfig(**{**TINY, "sources": (
        {"dataset": "cpm15", "split": "20x", "weight": 1.0, "val_images": 5},
        {"dataset": "consep", "split": "test", "weight": 1.0, "val_images": 13})})  # fmt: skip
    data = prepare_data(config, progress=False)
    assert len(data.val) == 5 + 13 and set(data.val_sources) == {"cpm15", "consep"}
    # the primary MoNuSeg image, 2 CPM-15 20x tiles (enlarged x2), 1 CoNSeP tile
    assert len(data.images) == 1 + 2 + 1
    cpm = data.images[1]
    from nucseg import datasets

    train_cpm = sorted(set(datasets.ids("cpm15", split="20x")) - set(data.val_sources["cpm15"]))
    native = datasets.load_sample("cpm15", train_cpm[0]).image
    assert cpm.shape[:2] == (2 * native.shape[0], 2 * native.shape[1])
    assert np.all(data.types[1] == UNKNOWN_TYPE) and np.all(data.types[0] == UNKNOWN_TYPE)
    assert set(np.unique(data.types[-1])) <= {0, 1, 2, 3, 4} and data.types[-1].max() > 0
    # tiles of the three sources are drawn 3 : 1 : 1 whatever their numbers
    origin = np.repeat([0, 1, 1, 2], [sum(t[0] == i for t in data.tiles) for i in range(4)])
    for source, share in ((0, 0.6), (1, 0.2), (2, 0.2)):
        assert data.tile_probs[origin == source].sum() == pytest.approx(share)
    # the type target follows the (augmented) target: known types only on CoNSeP tiles
    consep_tile = next(i for i, t in enumerate(data.tiles) if t[0] == 3 and
                       data.targets[3][t[1]].any())  # fmt: skip
    cpm_tile = next(i for i, t in enumerate(data.tiles) if t[0] == 1)
    from nucseg.augment import AugmentConfig, Augmenter

    images, targets, _, _, kinds = make_batch(
        data, np.array([consep_tile, cpm_tile]), 0, config, Augmenter(AugmentConfig())
    )
    assert np.all(kinds[1] == -1)
    assert np.all((kinds[0] > 0) == (targets[0] > 0))  # typed exactly where nuclei are


def test_a_typed_multi_source_run_trains_its_head(data_root, tmp_path):
    one = ({"dataset": "cpm15", "split": "20x", "weight": 1.0, "val_images": 0, "limit": 1},)
    run = fit(TrainConfig(**{**TINY, "sources": one}), tmp_path / "run", progress=False)
    from nucseg.models import load_model

    model = load_model(run / "model.safetensors")
    assert model.nucseg_config.type_channels == 5
    out = model(torch.zeros(1, 3, 64, 64))
    assert out.shape[1] == 3 + 5
    history = (run / "history.csv").read_text().splitlines()
    assert history[0].endswith("type_ce")  # the type loss is logged each step


def test_a_run_with_typed_tiles_weighs_its_type_classes(data_root, tmp_path):
    consep = ({"dataset": "consep", "split": "train", "weight": 1.0, "val_images": 0, "limit": 1},)
    config = TrainConfig(**{**TINY, "sources": consep, "type_class_weights": "balanced"})
    run = fit(config, tmp_path / "run", progress=False)
    weights = json.loads((run / "type_class_weights.json").read_text())
    assert len(weights) == 5 and min(weights) > 0
    assert weights[0] == min(weights)  # background is the most frequent class


def test_breast_sources_and_bad_sources_are_refused():
    with pytest.raises(ValueError, match="source needs"):
        TrainConfig(sources=({"split": "all"},))
    with pytest.raises(ValueError, match="type_classes"):
        TrainConfig(type_classes=3)


def test_a_breast_primary_source_is_refused_and_a_primary_source_is_brought_to_scale(data_root):
    # the primary source went in as loaded: neither checked for breast tissue nor resampled
    from nucseg.training.data import _load_sources

    with pytest.raises(ValueError, match="source monuseg: breast tissue is never trained on"):
        _load_sources(TrainConfig(dataset="monuseg", split="breast", val_images=1), False)
    config = TrainConfig(dataset="cpm15", split="20x", val_images=1, mpp=0.25, stain=None)
    samples, val_ids, origin = _load_sources(config, False)
    assert len(samples) == 7 and set(origin) == {0} and len(val_ids) == 1
    for sample in samples:  # 20x tiles (0.5 um/px) enlarged x2 to the model's 0.25
        assert sample.mpp == 0.25
        assert sample.image.shape[:2] == sample.labels.shape


def test_retune_of_a_multi_source_run_tunes_on_every_sources_validation_images(data_root, tmp_path):
    # training tunes on the validation images of every source; `nucseg tune` must tune on the
    # same ones (it used to take the primary dataset's alone: none here, with val_images 0)
    from nucseg.train import retune
    from nucseg.training.data import validation_samples

    two = ({"dataset": "cpm15", "split": "20x", "weight": 1.0, "val_images": 2, "limit": 3},)
    config = TrainConfig(**{**TINY, "sources": two, "type_classes": 0})
    run = fit(config, tmp_path / "run", progress=False)
    import json

    trained = json.loads((run / "thresholds.json").read_text())["validation_images"]
    assert len(trained) == 2
    assert [s.id for s in validation_samples(config)] == trained
    record = retune(run, progress=False)
    assert record["validation_images"] == trained
    assert json.loads((run / "thresholds.json").read_text())["validation_images"] == trained


def test_balanced_type_class_weights_favour_rare_classes_and_average_one():
    from types import SimpleNamespace

    from nucseg.training.loop import type_class_weights

    kinds = np.zeros((10, 10), np.uint8)  # 100 pixels: 80 background, 16 type 3, 4 type 1
    kinds[:2, :8] = 3
    kinds[2, :4] = 1
    unknown = np.full((10, 10), UNKNOWN_TYPE, np.uint8)  # a source without types: not counted
    data = SimpleNamespace(types=[kinds, unknown])
    weights = type_class_weights(data, TrainConfig(type_classes=5, type_class_weights="balanced"))
    freq = np.array([80, 4, 0, 16, 0]) / 100
    assert weights[1] > weights[3] > weights[0]
    assert weights[1] / weights[0] == pytest.approx((80 / 4) ** 0.5)
    assert float((freq * np.array(weights)).sum()) == pytest.approx(1.0)  # mean weight 1
    assert weights[2] == weights[4] == max(weights)  # absent classes: the largest weight
    given = TrainConfig(type_classes=5, type_class_weights=(1, 2, 3, 4, 5))
    assert type_class_weights(data, given) == [1, 2, 3, 4, 5]
    assert type_class_weights(data, TrainConfig(type_classes=5)) is None
    with pytest.raises(ValueError, match="type_class_weights"):
        TrainConfig(type_classes=5, type_class_weights="inverse")
    with pytest.raises(ValueError, match="type_class_weights"):
        TrainConfig(type_classes=5, type_class_weights=(1, 2))
