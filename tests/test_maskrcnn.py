"""Mask R-CNN: seam-safe stitching of tile predictions; a tiny model trains and predicts."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from skimage import draw

from nucseg.maskrcnn import (
    MaskRCNNConfig,
    MaskRCNNSegmenter,
    build_maskrcnn,
    instance_targets,
    read_weights,
    stitch_instances,
    train_maskrcnn,
)
from nucseg.metrics import aji
from nucseg.tiling import tile_grid


def _nuclei_on_every_seam(shape, grid, radius=12):
    """Discs centred on each core boundary (the middle of each overlap) and on tile edges."""
    labels = np.zeros(shape, np.int32)
    rows = sorted({s[0].start for s in grid})
    tile = grid[0][0].stop - grid[0][0].start
    seams = [(a + tile + b) / 2 for a, b in zip(rows[:-1], rows[1:], strict=True)]
    edges = [a + tile for a in rows[:-1]] + rows[1:]
    positions = sorted({int(p) for p in seams + edges if radius < p < shape[0] - radius})
    label = 1
    for r in positions:
        for c in positions:
            rr, cc = draw.disk((r, c), radius, shape=shape)
            labels[rr, cc] = label
            label += 1
    return labels


def test_stitching_neither_duplicates_nor_cuts_nuclei_on_seams():
    shape = (700, 700)
    grid = tile_grid(shape, tile=256, overlap=0.5)
    truth = _nuclei_on_every_seam(shape, grid)
    assert truth.max() > 30

    def perfect_detector(slices):  # what an ideal model sees in the tile: objects cut at its edge
        crop = truth[slices]
        ids = [i for i in np.unique(crop) if i]
        masks = np.stack([crop == i for i in ids])
        return masks, np.linspace(0.9, 0.6, len(ids))

    labels, scores = stitch_instances(shape, grid, perfect_detector, min_size=1)
    assert labels.max() == truth.max() == len(scores)  # each nucleus exactly once
    assert aji(truth, labels) == 1.0  # and whole
    assert set(scores) == set(range(1, labels.max() + 1))


def test_higher_score_keeps_overlapping_pixels():
    grid = tile_grid((256, 256), tile=256, overlap=0.5)
    a = np.zeros((256, 256), bool)
    a[10:40, 10:40] = True
    b = np.zeros((256, 256), bool)
    b[20:50, 20:50] = True
    labels, scores = stitch_instances((256, 256), grid, lambda s: (np.stack([a, b]), [0.6, 0.9]))
    assert scores == {1: 0.9, 2: 0.6}
    assert (labels == 1).sum() == 900 and (labels == 2).sum() == 900 - 400


def test_instance_targets_boxes_and_masks():
    labels = np.zeros((32, 32), np.int32)
    labels[2:6, 3:9] = 1
    labels[20, 20] = 2  # too small
    target = instance_targets(labels)
    assert target["boxes"].tolist() == [[3.0, 2.0, 9.0, 6.0]]
    assert target["masks"].shape == (1, 32, 32) and int(target["masks"].sum()) == 24
    empty = instance_targets(np.zeros((8, 8), np.int32))
    assert empty["boxes"].shape == (0, 4) and empty["masks"].shape == (0, 8, 8)


def test_tiny_maskrcnn_trains_and_predicts(data_root, tmp_path):
    config = MaskRCNNConfig(backbone="resnet18", limit_images=1, steps=3, time_budget_s=None,
                            batch_size=1, stain=None, warmup_steps=1)  # fmt: skip
    run = train_maskrcnn(config, tmp_path / "run", progress=False)
    assert (run / "history.csv").read_text().count("\n") == 4
    assert (run / "loss.png").is_file()
    segmenter = MaskRCNNSegmenter.load(run, score_threshold=0.0)
    image = np.random.default_rng(0).integers(0, 255, (300, 260, 3), dtype=np.uint8)
    labels, scores = segmenter.predict_instances(image)
    assert labels.shape == (300, 260) and labels.dtype == np.int32
    assert set(np.unique(labels)) - {0} == set(scores)


@pytest.mark.slow
def test_killed_and_resumed_training_equals_uninterrupted(data_root, tmp_path):
    config = MaskRCNNConfig(backbone="resnet18", limit_images=1, steps=4, time_budget_s=None,
                            batch_size=1, stain=None, warmup_steps=1)  # fmt: skip
    train_maskrcnn(config, tmp_path / "full", progress=False)
    train_maskrcnn(config, tmp_path / "resumed", progress=False, stop_after=2)
    assert not (tmp_path / "resumed" / "model.safetensors").exists()  # killed: no final weights
    train_maskrcnn(config, tmp_path / "resumed", progress=False, resume=True)
    full = read_weights(tmp_path / "full")
    resumed = read_weights(tmp_path / "resumed")
    assert all(torch.equal(full[key], resumed[key]) for key in full)
    history = (tmp_path / "resumed" / "history.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in history[1:]] == ["1", "2", "3", "4"]
    other = dataclasses.replace(config, lr=0.5)
    with pytest.raises(ValueError, match="another config"):
        train_maskrcnn(other, tmp_path / "resumed", progress=False, resume=True)


def test_config_from_dict_checks_keys_and_length():
    config = MaskRCNNConfig.from_dict({"steps": 5, "time_budget_s": None})
    assert config.steps == 5
    with pytest.raises(KeyError, match="Mask R-CNN config key.*'lr_rate'"):
        MaskRCNNConfig.from_dict({"lr_rate": 1.0})
    with pytest.raises(ValueError, match="exactly one"):
        MaskRCNNConfig(steps=5)


def test_backbone_uses_trainable_batchnorm():
    model = build_maskrcnn("resnet18")
    norms = [m for m in model.backbone.modules() if "BatchNorm" in type(m).__name__]
    assert norms and all(isinstance(m, torch.nn.BatchNorm2d) for m in norms)
    heads = model.roi_heads
    for head in (heads.box_head, heads.mask_head, model.backbone.fpn):
        assert any(isinstance(m, torch.nn.BatchNorm2d) for m in head.modules())


def test_untrained_heads_start_near_chance_on_a_real_tile(data_root):
    from nucseg import datasets
    from nucseg.maskrcnn import _image_tensor

    torch.manual_seed(0)
    sample = datasets.load_sample("monuseg", "TCGA-21-5784-01Z-00-DX1")
    image, labels = sample.image[:256, :256], sample.labels[:256, :256]
    model = build_maskrcnn("resnet18").train()
    with torch.no_grad():
        losses = model([_image_tensor(image)], [instance_targets(labels)])
    # Binary cross-entropies at chance are log 2; torchvision's own init gives a mask loss of 5-10.
    assert abs(float(losses["loss_mask"]) - np.log(2)) < 0.05
    assert float(losses["loss_classifier"]) < 0.8
    with pytest.raises(ValueError, match="backbone 'vgg16'"):
        build_maskrcnn("vgg16")
