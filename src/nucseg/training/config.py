"""The training config: every setting of a run, saved as ``config.json`` in its folder."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nucseg._checks import check_steps_or_budget, dataclass_from_dict

_SOURCE_DEFAULTS = {"split": "all", "weight": 1.0, "val_images": 0, "limit": None}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run; saved as ``config.json`` in the run folder."""

    model: str = "unet-efficientnet-lite0"
    num_classes: int = 3
    encoder_weights: str | None = None
    decoder_channels: tuple[int, ...] | None = None
    dataset: str = "monuseg"
    split: str = "train"
    val_images: int = 4
    limit_images: int | None = None
    stain: str | None = "macenko"
    tile: int = 256
    overlap: float = 0.1
    batch_size: int = 8
    lr: float = 1e-4
    weight_decay: float = 1e-5
    steps: int | None = 2000
    time_budget_s: float | None = None
    warmup_steps: int = 100
    schedule: str = "cosine"
    w0: float = 10.0
    sigma: float = 5.0
    boundary_width: int = 2
    augment: dict[str, Any] | None = field(default_factory=dict)
    seed: int = 0
    checkpoint_every_s: float = 300.0
    checkpoint_every_steps: int | None = None
    precision: str = "auto"
    fp16_weights: bool = True
    workers: int = 0  # threads that augment tiles (and the next batch ahead); 0: in the loop
    # Prediction settings the post-processing is tuned for and the model ships with. 25 % overlap
    # (the paper: 50 %) halves the tiles of a 1000 x 1000 image for -0.001 to -0.003 validation
    # AJI (results/unet/predict_settings.json); whole-image tiles lost 0.014.
    tta: str = "none"
    predict_tile: int = 256
    predict_overlap: float = 0.25
    # A regression channel after the classes: each nucleus's distance to its border, normalised
    # to 1 at its centre (targets.distance_map), learnt by MSE with this weight. Post-processing
    # may then place one marker per distance peak ("distance" rule) instead of per interior blob.
    distance: bool = False
    distance_weight: float = 1.0
    # Keep an exponential moving average of the weights (and BatchNorm statistics) with this
    # decay per step, beside the trained weights. At the end both are tuned on the validation
    # images and the better one is saved (``thresholds.json``: ``weights``, ``compared_weights``).
    ema_decay: float | None = None
    # Start from the weights of this model (a run folder or a model.safetensors file written by
    # nucseg.models.save_model) instead of encoder_weights: fine-tuning. The network must be the
    # same; the file's SHA-256 is recorded in init_from.json.
    init_from: str | None = None
    # Normalise each training tile after augmenting it (the image as it was scanned, re-stained
    # by the augmentation, then normalised per tile), instead of normalising the images once
    # before augmenting: the network then learns from what the normaliser makes of an off-palette
    # image, its mistakes included, as at prediction. Validation images are normalised whole.
    stain_after_augment: bool = False
    # Further labelled sources beside (dataset, split), each a dict {"dataset", "split",
    # "weight", "val_images", "limit" (the first images only)}: their images are brought to
    # ``mpp`` (nucseg.scale), each holds out ``val_images`` images drawn by the seed, and
    # batches draw tiles with probability proportional to their source's weight (the primary
    # source's is ``primary_weight``), whatever the source's size. None: the primary source
    # alone, in seeded epochs.
    sources: tuple[dict[str, Any], ...] | None = None
    primary_weight: float = 1.0
    # Microns per pixel the network learns at (every source is resampled to it).
    mpp: float = 0.25
    # A nucleus-type head: this many more output channels (background, then the types; 5 for
    # CoNSeP's four classes), learnt by cross-entropy with weight ``type_weight`` on the tiles
    # of sources whose samples carry types, ignored on the others.
    type_classes: int = 0
    type_weight: float = 1.0
    # Per-class weights of the type cross-entropy (background first): None (all 1), a list of
    # ``type_classes`` floats, or "balanced": each class weighted by its pixel frequency f to
    # the power -1/2 over the training tiles' known types, scaled so that a pixel's mean weight
    # is 1 (rare classes such as CoNSeP's "other" count more without drowning the rest).
    type_class_weights: str | tuple[float, ...] | None = None

    @property
    def all_sources(self) -> list[dict[str, Any]]:
        """Every source of the run: the primary one first, then :attr:`sources`."""
        primary = {"dataset": self.dataset, "split": self.split, "weight": self.primary_weight,
                   "val_images": self.val_images}  # fmt: skip
        return [primary, *(dict(_SOURCE_DEFAULTS, **s) for s in self.sources or ())]

    def __post_init__(self) -> None:
        check_steps_or_budget(self.steps, self.time_budget_s)
        if self.stain_after_augment and self.stain is None:
            raise ValueError("stain_after_augment needs a stain normaliser (stain is None)")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"schedule must be 'cosine' or 'constant', got {self.schedule!r}")
        if self.num_classes not in (2, 3):
            raise ValueError(f"num_classes must be 2 or 3, got {self.num_classes}")
        for source in self.sources or ():
            unknown = sorted(set(source) - set(_SOURCE_DEFAULTS) - {"dataset"})
            if "dataset" not in source or unknown:
                raise ValueError(
                    f"a source needs 'dataset' and may have {sorted(_SOURCE_DEFAULTS)}; "
                    f"got {source!r}"
                )
        if self.type_classes not in (0, 5):
            raise ValueError(f"type_classes must be 0 or 5 (CoNSeP), got {self.type_classes}")
        weights = self.type_class_weights
        if isinstance(weights, str) and weights != "balanced":
            raise ValueError(f"type_class_weights must be 'balanced' or a list, got {weights!r}")
        if weights is not None and not isinstance(weights, str):
            if len(weights) != self.type_classes or min(weights) <= 0:
                raise ValueError(
                    f"type_class_weights needs {self.type_classes} positive weights, "
                    f"got {weights!r}"
                )
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {self.ema_decay}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a dict (e.g. a JSON config file); unknown keys raise ``KeyError``."""
        return dataclass_from_dict(cls, values, what="training config")
