"""Mask R-CNN for nuclei: torchvision's model sized for small objects, trained on tiles.

Lagree et al. (2021) trained Mask R-CNN (ResNet-101 FPN backbone, COCO weights) with SGD,
momentum 0.9, learning rate 1e-3, weight decay 1e-4. Without COCO or ImageNet weights the
backbone's FrozenBatchNorm (fixed statistics from pretraining) leaves activations unnormalised
and training diverges, so the network is torchvision's "v2" Mask R-CNN, with trainable BatchNorm
in the backbone, the FPN and the heads; anchors span 8 to 128 pixels (nuclei at 40x are 10 to 60
pixels across) instead of 32 to 512.

Large images are predicted tile by tile (:func:`stitch_instances`): each object is kept only by
the tile whose *core* holds its centre, the cores partitioning the image at the middle of each
overlap. With an overlap of at least twice the largest object (256-pixel tiles at 50 % overlap:
64 pixels on each side), the owning tile sees every object whole, and no object is duplicated or
cut at a seam (``tests/test_maskrcnn.py`` checks nuclei placed on every seam).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage as ndi

from nucseg._checks import check_image, check_labels, check_steps_or_budget, dataclass_from_dict
from nucseg.atomic import atomic_write
from nucseg.tiling import Slices, pad_to, tile_grid

log = logging.getLogger(__name__)

#: The trained weights of a run folder; runs written before safetensors hold ``model.pt``.
WEIGHTS = "model.safetensors"
LEGACY_WEIGHTS = "model.pt"


def read_weights(folder: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of a Mask R-CNN run folder, read without running any code.

    ``model.safetensors`` is read with safetensors; an older run's ``model.pt`` with
    ``torch.load(weights_only=True)``, PyTorch's unpickler restricted to tensors and plain
    containers, which refuses (and never runs) anything else.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    path = folder / WEIGHTS
    try:
        if path.is_file():
            return load_file(path)
        path = folder / LEGACY_WEIGHTS
        if path.is_file():
            return torch.load(path, map_location="cpu", weights_only=True)
    except (SafetensorError, RuntimeError, ValueError, EOFError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path}: not readable Mask R-CNN weights ({first})") from None
    except Exception as err:  # pickle.UnpicklingError and others of a refused file
        raise ValueError(f"{path}: refused, not plain weights ({type(err).__name__})") from None
    raise FileNotFoundError(f"{folder} holds neither {WEIGHTS} nor {LEGACY_WEIGHTS}")


#: Anchor sizes, one per FPN level (P2 to P6).
ANCHOR_SIZES = ((8,), (16,), (32,), (64,), (128,))


def build_maskrcnn(
    backbone: str = "resnet101", *, max_detections: int = 400, rois_per_image: int = 128
) -> torch.nn.Module:
    """Mask R-CNN (torchvision) with a ``backbone`` FPN, BatchNorm, nuclei-sized anchors, 2 classes.

    ``backbone`` is a torchvision ResNet name (``resnet101`` as the paper; ``resnet18`` for quick
    tests). The network is torchvision's "v2" Mask R-CNN (``maskrcnn_resnet50_fpn_v2``: BatchNorm
    in the backbone, the FPN and the box and mask heads, a two-convolution RPN head) with
    Detectron2's small initial weights in the last layers, which trains from scratch: the v1
    heads with torchvision's initialisation start with a mask loss of about 10 (chance is 0.69),
    and 300 SGD steps left that network scoring below Otsu. Images are not resized
    (``min_size`` = ``max_size`` = 256 for 256-pixel tiles).

    ``rois_per_image`` proposals per training image (a quarter of them positive at most) train
    the box and mask heads, which cost most of a step: a 256-pixel MoNuSeg tile holds about 30
    nuclei, so 128 give about one positive per nucleus, and a step of 4 tiles takes 4.8 s on 2
    CPU cores against 7.0 s with 256 (``benchmarks/bench_maskrcnn_step.py``; Detectron2's 512
    are meant for 800-pixel COCO images).
    """
    from torchvision.models import resnet
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, RPNHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads

    if not backbone.startswith("resnet") or not hasattr(resnet, backbone):
        raise ValueError(f"unknown Mask R-CNN backbone {backbone!r}; give a torchvision ResNet")
    norm = torch.nn.BatchNorm2d
    # The same private helper torchvision's own v2 builder uses: the public resnet_fpn_backbone
    # has no normalisation in the FPN.
    body = _resnet_fpn_extractor(getattr(resnet, backbone)(weights=None), 5, norm_layer=norm)
    anchors = AnchorGenerator(ANCHOR_SIZES, ((0.5, 1.0, 2.0),) * len(ANCHOR_SIZES))
    channels = body.out_channels
    model = MaskRCNN(
        body,
        num_classes=2,
        min_size=256,
        max_size=256,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
        rpn_anchor_generator=anchors,
        rpn_head=RPNHead(channels, anchors.num_anchors_per_location()[0], conv_depth=2),
        box_head=FastRCNNConvFCHead((channels, 7, 7), [256] * 4, [1024], norm_layer=norm),
        mask_head=MaskRCNNHeads(channels, [256] * 4, 1, norm_layer=norm),
        rpn_batch_size_per_image=256,
        box_detections_per_img=max_detections,
        box_batch_size_per_image=rois_per_image,
    )
    # Detectron2's initialisation of the last layers. torchvision's Kaiming init (fan-out mode)
    # of the 1-channel mask logits layer gives logits of standard deviation about 20, a mask loss
    # of 5 to 10 at the first step, which dominates the first hundreds of steps from scratch.
    heads = model.roi_heads
    for layer, std in ((heads.mask_predictor.mask_fcn_logits, 0.001),
                       (heads.box_predictor.cls_score, 0.01),
                       (heads.box_predictor.bbox_pred, 0.001)):  # fmt: skip
        torch.nn.init.normal_(layer.weight, std=std)
        torch.nn.init.zeros_(layer.bias)
    model.nucseg_backbone = backbone
    return model


def instance_targets(labels: np.ndarray, *, min_pixels: int = 4) -> dict[str, torch.Tensor]:
    """Mask R-CNN training target of one tile: boxes (x0, y0, x1, y1), class 1, binary masks."""
    labels = check_labels(labels)
    boxes, masks = [], []
    for index, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:
            continue
        mask = labels == index
        if mask.sum() < min_pixels:
            continue
        boxes.append([box[1].start, box[0].start, box[1].stop, box[0].stop])
        masks.append(mask)
    shape = labels.shape
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.ones(len(boxes), dtype=torch.int64),
        "masks": torch.from_numpy(np.stack(masks) if masks else np.zeros((0, *shape), np.uint8)).to(
            torch.uint8
        ),
    }


def _image_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255.0


def _dihedral(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator):
    k = int(rng.integers(4))
    image, labels = np.rot90(image, k), np.rot90(labels, k)
    if rng.random() < 0.5:
        image, labels = image[:, ::-1], labels[:, ::-1]
    return np.ascontiguousarray(image), np.ascontiguousarray(labels)


# --- stitching ------------------------------------------------------------------------------------


def _cores(starts: Sequence[int], tile: int, size: int) -> list[tuple[float, float]]:
    """Per tile along one axis, the half-open interval of centres it owns."""
    bounds = [0.0]
    bounds += [(a + tile + b) / 2 for a, b in zip(starts[:-1], starts[1:], strict=True)]
    bounds.append(float(size))
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def stitch_instances(
    shape: tuple[int, int],
    grid: list[Slices],
    predict_tile: Callable[[Slices], tuple[np.ndarray, np.ndarray]],
    *,
    min_size: int = 10,
) -> tuple[np.ndarray, dict[int, float]]:
    """Instance labels of a whole image from per-tile instance predictions.

    Parameters
    ----------
    shape : (rows, cols)
        Image shape.
    grid : list of (slice, slice)
        Tiles from :func:`nucseg.tiling.tile_grid`.
    predict_tile : callable
        ``slices -> (masks, scores)``: ``(K, h, w)`` boolean masks in tile coordinates and
        ``(K,)`` scores.
    min_size : int, optional
        Objects left with fewer pixels (after higher-scored objects took theirs) are dropped.

    Returns
    -------
    labels : (rows, cols) int32 array
    scores : dict of label to score
    """
    row_starts = sorted({s[0].start for s in grid})
    col_starts = sorted({s[1].start for s in grid})
    tile_rows = grid[0][0].stop - grid[0][0].start
    tile_cols = grid[0][1].stop - grid[0][1].start
    row_core = dict(zip(row_starts, _cores(row_starts, tile_rows, shape[0]), strict=True))
    col_core = dict(zip(col_starts, _cores(col_starts, tile_cols, shape[1]), strict=True))
    kept: list[tuple[float, Slices, np.ndarray]] = []
    for slices in grid:
        masks, scores = predict_tile(slices)
        (r0, r1), (c0, c1) = row_core[slices[0].start], col_core[slices[1].start]
        for mask, score in zip(masks, scores, strict=True):
            rows, cols = np.nonzero(mask)
            if rows.size == 0:
                continue
            r = rows.mean() + slices[0].start + 0.5  # pixel-centre coordinates
            c = cols.mean() + slices[1].start + 0.5
            if r0 <= r < r1 and c0 <= c < c1:
                kept.append((float(score), slices, mask))
    labels = np.zeros(shape, dtype=np.int32)
    scores: dict[int, float] = {}
    next_label = 1
    for score, slices, mask in sorted(kept, key=lambda item: -item[0]):
        window = labels[slices]
        free = mask & (window == 0)
        if free.sum() < min_size:
            continue
        window[free] = next_label
        scores[next_label] = score
        next_label += 1
    return labels, scores


# --- training and prediction ----------------------------------------------------------------------


@dataclass
class MaskRCNNConfig:
    """Training recipe (the paper's optimiser; a wall-clock budget or a number of steps)."""

    backbone: str = "resnet101"
    dataset: str = "monuseg"
    split: str = "train"
    limit_images: int | None = None
    stain: str | None = "macenko"
    tile: int = 256
    overlap: float = 0.1
    batch_size: int = 4
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    rois_per_image: int = 128
    steps: int | None = None
    time_budget_s: float | None = 1200.0
    seed: int = 0
    precision: str = "fp32"
    checkpoint_every_s: float = 300.0

    def __post_init__(self) -> None:
        check_steps_or_budget(self.steps, self.time_budget_s)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> MaskRCNNConfig:
        """Build from a dict (e.g. the ``maskrcnn`` block of a reproduce config)."""
        return dataclass_from_dict(cls, values, what="Mask R-CNN config")


def train_maskrcnn(
    config: MaskRCNNConfig,
    run_dir: str | Path,
    *,
    progress: bool = True,
    resume: bool = False,
    stop_after: int | None = None,
) -> Path:
    """Train on tiles of the configured images; writes ``model.safetensors``, ``config.json``,
    history.

    Every ``config.checkpoint_every_s`` seconds the weights, optimiser, random states, step,
    elapsed time and history go to the run's checkpoint (:mod:`nucseg.training.checkpoint`);
    ``resume=True`` continues from it
    (its config must equal ``config``) to the weights an unbroken run ends with. ``stop_after``
    stops after that many steps with a checkpoint, as a killed run would (for tests).
    """
    from nucseg import datasets
    from nucseg.infer import autocast, default_device
    from nucseg.stain import get_normalizer
    from nucseg.train import _mosaic, _write_json, budgeted_steps, write_history
    from nucseg.training import checkpoint

    run_dir = Path(run_dir)
    if resume:  # before any work: a missing, old (pickle) or other-config checkpoint is refused
        checkpoint.check_config(run_dir, config)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    ids = datasets.ids(config.dataset, split=config.split)[: config.limit_images]
    samples = [datasets.load_sample(config.dataset, i) for i in ids]
    normaliser = None
    if config.stain is not None:
        normaliser = get_normalizer(config.stain).fit(_mosaic([s.image for s in samples]))
    tiles = []
    for sample in samples:
        image = sample.image if normaliser is None else normaliser.transform(sample.image)
        image, _ = pad_to(image, (config.tile, config.tile), mode="constant")
        labels, _ = pad_to(sample.labels, (config.tile, config.tile), mode="constant")
        for s in tile_grid(image.shape, tile=config.tile, overlap=config.overlap):
            tiles.append((image[s], labels[s]))
    device = default_device()
    model = build_maskrcnn(config.backbone, rois_per_image=config.rois_per_image).to(device)
    optimiser = torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum,
        weight_decay=config.weight_decay,
    )  # fmt: skip
    history: list[dict[str, Any]] = []
    step, elapsed = 0, 0.0
    if resume:
        saved = checkpoint.load_checkpoint(run_dir, config, model, optimiser, device)
        rng.bit_generator.state = saved["numpy_rng"]
        step, elapsed, history = saved["state"]["step"], saved["state"]["elapsed"], saved["history"]
        log.info("resumed Mask R-CNN at step %d", step)

    def save_checkpoint(step: int, elapsed: float) -> None:
        checkpoint.write_checkpoint(run_dir, config, model, optimiser, step=step,
                                    numpy_rng=rng.bit_generator.state, history=history,
                                    state={"step": step, "elapsed": elapsed})  # fmt: skip

    model.train()
    last_checkpoint = time.monotonic()
    loop = budgeted_steps(config.steps, config.time_budget_s, desc="train mask r-cnn",
                          progress=progress, start_step=step, elapsed_before=elapsed)  # fmt: skip
    for step, elapsed, bar in loop:
        batch = [tiles[i] for i in rng.integers(len(tiles), size=config.batch_size)]
        images, targets = [], []
        for image, labels in batch:
            image, labels = _dihedral(image, labels, rng)
            images.append(_image_tensor(image).to(device))
            targets.append({k: v.to(device) for k, v in instance_targets(labels).items()})
        lr = config.lr * min(1.0, (step + 1) / max(config.warmup_steps, 1))
        for group in optimiser.param_groups:
            group["lr"] = lr
        with autocast(device, config.precision):
            losses = model(images, targets)
        loss = sum(losses.values())
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimiser.step()
        parts = {k: float(v.detach()) for k, v in losses.items()}
        history.append({"step": step + 1, "elapsed_s": round(elapsed, 2), "lr": lr,
                        "loss": float(loss.detach()), **parts})  # fmt: skip
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if stop_after is not None and step + 1 >= stop_after:
            save_checkpoint(step + 1, elapsed)
            return run_dir
        if time.monotonic() - last_checkpoint > config.checkpoint_every_s:
            save_checkpoint(step + 1, elapsed)
            last_checkpoint = time.monotonic()
    from safetensors.torch import save_file

    with atomic_write(run_dir / WEIGHTS, overwrite=True) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, tmp)
    _write_json(run_dir / "config.json", dataclasses.asdict(config))
    if normaliser is not None:
        _write_json(run_dir / "normaliser.json", normaliser.to_dict())
    write_history(run_dir, history, loss_label="Mask R-CNN loss (sum of the five terms)")
    return run_dir


class MaskRCNNSegmenter:
    """Segment images of any size with a trained Mask R-CNN (tiles, centre-owned stitching).

    Parameters
    ----------
    model : torch.nn.Module
        From :func:`build_maskrcnn`, trained.
    normaliser : StainNormalizer, optional
        Applied to every image first.
    tile, overlap : int, float
        Prediction tiles; the overlap must be at least twice the largest nucleus (see the
        module docstring).
    score_threshold, mask_threshold : float
        Detections under ``score_threshold`` are dropped; mask probabilities are cut at
        ``mask_threshold``.
    min_size : int
        Smallest object kept, in pixels.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        normaliser: Any = None,
        tile: int = 256,
        overlap: float = 0.5,
        score_threshold: float = 0.5,
        mask_threshold: float = 0.5,
        min_size: int = 10,
        device: torch.device | None = None,
    ) -> None:
        from nucseg.infer import default_device

        self.device = default_device() if device is None else device
        self.model = model.to(self.device).eval()
        self.normaliser = normaliser
        self.tile, self.overlap = tile, overlap
        self.score_threshold, self.mask_threshold = score_threshold, mask_threshold
        self.min_size = min_size

    @classmethod
    def load(cls, path: str | Path, **options: Any) -> MaskRCNNSegmenter:
        """Load a run folder written by :func:`train_maskrcnn`."""
        from nucseg.stain import read_normaliser

        folder = Path(path)
        config = json.loads((folder / "config.json").read_text())
        model = build_maskrcnn(config["backbone"])
        model.load_state_dict(read_weights(folder))
        return cls(model, normaliser=read_normaliser(folder), tile=config["tile"], **options)

    @torch.inference_mode()
    def predict_instances(self, image: np.ndarray) -> tuple[np.ndarray, dict[int, float]]:
        """``(labels, scores)``: instance labels and each label's detection score."""
        image = check_image(image)
        if self.normaliser is not None:
            image = self.normaliser.transform(image)
        padded, crop = pad_to(image, (self.tile, self.tile))
        grid = tile_grid(padded.shape, tile=self.tile, overlap=self.overlap)
        # Drop low-scored boxes before the mask head rather than after it: the same detections
        # (a box is only suppressed by a higher-scored one), without pasting up to
        # ``max_detections`` masks per tile (6x faster for a barely trained network).
        # The held model's own threshold is restored afterwards, so a caller's model is unchanged.
        heads = self.model.roi_heads
        saved_threshold, heads.score_thresh = heads.score_thresh, self.score_threshold
        try:
            labels, scores = self._stitch(padded, grid)
        finally:
            heads.score_thresh = saved_threshold
        labels = labels[crop]
        present = set(np.unique(labels).tolist()) - {0}
        return labels, {k: v for k, v in scores.items() if k in present}

    def _stitch(self, padded: np.ndarray, grid: Any) -> tuple[np.ndarray, dict[int, float]]:
        def predict_tile(slices: Slices) -> tuple[np.ndarray, np.ndarray]:
            out = self.model([_image_tensor(padded[slices]).to(self.device)])[0]
            keep = out["scores"] >= self.score_threshold
            masks = (out["masks"][keep, 0] >= self.mask_threshold).cpu().numpy()
            return masks, out["scores"][keep].float().cpu().numpy()

        return stitch_instances(padded.shape[:2], grid, predict_tile, min_size=self.min_size)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return self.predict_instances(image)[0]
