"""Tiled, batched network prediction: image -> probability maps -> instance labels.

``image -> normalise stain -> pad_to -> tile_grid -> model on batches (+ flip TTA) -> MapStitcher ->
softmax maps -> postprocess.to_instances``. Runs in bfloat16 autocast on CPUs with native bf16
(AMX or AVX512-BF16), fp32 on other CPUs, and mixed precision on a GPU when one is present.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nucseg._checks import check_image
from nucseg.tiling import MapStitcher, pad_to, tile_grid

log = logging.getLogger(__name__)

#: Per-channel mean and standard deviation of inputs when the model names none (ImageNet's).
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)

TTA_MODES = ("none", "flips", "d4")

#: Prediction settings a user may override when loading a model (see :meth:`Predictor.load`).
PREDICT_OPTIONS = ("tile", "overlap", "batch_size", "tta", "precision")


@functools.cache
def cpu_has_bf16() -> bool:
    """True if this CPU computes bfloat16 natively (AMX or AVX512-BF16 in /proc/cpuinfo)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def default_device() -> torch.device:
    """The first CUDA GPU if there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast(device: torch.device, precision: str = "auto") -> contextlib.AbstractContextManager:
    """Autocast context for ``precision`` in {"auto", "bf16", "fp32"} on ``device``.

    "auto" is bf16 on a GPU with bf16 support and on a CPU with native bf16, else fp32.
    """
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"precision must be 'auto', 'bf16' or 'fp32', got {precision!r}")
    if precision == "auto":
        if device.type == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        else:
            precision = "bf16" if cpu_has_bf16() else "fp32"
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def input_stats(model: torch.nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and standard deviation the encoder of ``model`` expects its inputs standardised with.

    They are those of its pretrained weights (ImageNet's for most encoders; 0.5 and 0.5 for the
    TensorFlow-origin efficientnet-lite0 and Inception-v3), read from the model registry.
    """
    from nucseg.models import get_model_entry

    config = getattr(model, "nucseg_config", None)
    if config is None:
        return MEAN, STD
    entry = get_model_entry(config.name)
    return tuple(entry.input_mean), tuple(entry.input_std)


def to_tensor(
    tiles: np.ndarray,
    device: torch.device,
    *,
    mean: tuple[float, ...] = MEAN,
    std: tuple[float, ...] = STD,
) -> torch.Tensor:
    """``(N, H, W, 3) uint8`` tiles -> standardised ``(N, 3, H, W)`` float32, channels_last."""
    x = torch.from_numpy(np.ascontiguousarray(tiles)).to(device).permute(0, 3, 1, 2).float()
    mean_t = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255
    std_t = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255
    return ((x - mean_t) / std_t).contiguous(memory_format=torch.channels_last)


def _transforms(tta: str) -> list[tuple[int, bool]]:
    """(number of 90-degree rotations, flip columns) pairs of each TTA mode."""
    if tta not in TTA_MODES:
        raise ValueError(f"tta must be one of {TTA_MODES}, got {tta!r}")
    if tta == "none":
        return [(0, False)]
    if tta == "flips":
        return [(0, False), (0, True), (2, False), (2, True)]
    return [(k, f) for k in range(4) for f in (False, True)]


@torch.inference_mode()
def forward_tta(model: torch.nn.Module, x: torch.Tensor, *, tta: str = "none") -> torch.Tensor:
    """Mean of the model's logits over the TTA transforms, each mapped back to the input frame."""
    total = None
    transforms = _transforms(tta)
    for k, flip in transforms:
        y = torch.rot90(x, k, dims=(2, 3)) if k else x
        y = torch.flip(y, dims=(3,)) if flip else y
        out = model(y).float()
        out = torch.flip(out, dims=(3,)) if flip else out
        out = torch.rot90(out, -k, dims=(2, 3)) if k else out
        total = out if total is None else total + out
    return total / len(transforms)


def _batches(grid: list, size: int) -> Iterator[list]:
    for start in range(0, len(grid), size):
        yield grid[start : start + size]


def predict_maps(
    model: torch.nn.Module,
    image: np.ndarray,
    *,
    num_classes: int,
    tile: int = 256,
    overlap: float = 0.5,
    batch_size: int = 8,
    tta: str = "none",
    device: torch.device | None = None,
    precision: str = "auto",
    softmax: bool = True,
    type_channels: int = 0,
) -> np.ndarray:
    """Predict per-pixel maps for a whole image from overlapping tiles.

    Parameters
    ----------
    model : torch.nn.Module
        Network returning ``(N, C, tile, tile)`` logits; the first ``num_classes`` channels are
        class scores, any further channels are regression maps.
    image : (H, W, 3) uint8 array
        RGB image, already stain-normalised if the model expects it. Any size.
    num_classes : int
        Number of class channels, which are turned into probabilities with a softmax.
    tile, overlap : int, float, optional
        Tile side and overlap (the paper predicts with 50 % overlap).
    batch_size : int, optional
        Tiles per forward pass.
    tta : {"none", "flips", "d4"}, optional
        Test-time augmentation: none, the 4 flips, or the 8 rotations and flips.
    device : torch.device, optional
        Where to run; default :func:`default_device`.
    precision : {"auto", "bf16", "fp32"}, optional
        See :func:`autocast`.
    softmax : bool, optional
        Turn the class logits into probabilities (default); False keeps the logits (the
        pre-softmax maps that GB U-Net stacks).
    type_channels : int, optional
        The last ``type_channels`` channels are a type head's logits, also turned into
        probabilities (their own softmax) when ``softmax``.

    Returns
    -------
    (H, W, C) float32 array
        Class probabilities (summing to 1 over the first ``num_classes`` channels), then the raw
        regression channels, then any type probabilities, blended over tiles with a Hann window.
    """
    image = check_image(image)
    device = default_device() if device is None else device
    padded, crop = pad_to(image, (tile, tile))
    grid = tile_grid(padded.shape[:2], tile=tile, overlap=overlap)
    stitcher = MapStitcher(padded.shape[:2])
    mean, std = input_stats(model)
    model.eval()
    with torch.inference_mode(), autocast(device, precision):
        for batch in _batches(grid, batch_size):
            x = to_tensor(np.stack([padded[s] for s in batch]), device, mean=mean, std=std)
            out = forward_tta(model, x, tta=tta)
            if softmax:
                out[:, :num_classes] = torch.softmax(out[:, :num_classes], dim=1)
                if type_channels:
                    out[:, -type_channels:] = torch.softmax(out[:, -type_channels:], dim=1)
            maps = out.permute(0, 2, 3, 1).cpu().numpy()
            for tile_map, slices in zip(maps, batch, strict=True):
                stitcher.add(tile_map, slices)
    return np.ascontiguousarray(stitcher.result()[crop], dtype=np.float32)


class Predictor:
    """A trained network with everything needed to turn an image into instance labels.

    Parameters
    ----------
    model : torch.nn.Module
        The network.
    num_classes : int
        Class channels of its output (2: background/nucleus; 3: background/interior/boundary).
    normaliser : nucseg.stain.StainNormalizer, optional
        Fitted stain normaliser applied to every image first.
    postprocess : str, optional
        Name in :data:`nucseg.postprocess` 's registry.
    postprocess_params : dict, optional
        Keyword arguments of that post-processing (e.g. tuned thresholds).
    tile, overlap, batch_size, tta, device, precision
        As in :func:`predict_maps`.
    fold_bn : bool, optional
        Fold the network's batch norms into its convolutions
        (:func:`nucseg.models.fuse.fold_batchnorm`): the same maps, about a fifth faster on a
        CPU.
    type_channels : int, optional
        Channels of the network's type head (0: none), the last of its output; see
        :mod:`nucseg.nucleus_types`.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        num_classes: int,
        normaliser: Any = None,
        postprocess: str = "watershed",
        postprocess_params: dict[str, Any] | None = None,
        tile: int = 256,
        overlap: float = 0.5,
        batch_size: int = 8,
        tta: str = "none",
        device: torch.device | None = None,
        precision: str = "auto",
        fold_bn: bool = True,
        type_channels: int = 0,
    ) -> None:
        from nucseg.models.fuse import fold_batchnorm

        self.device = default_device() if device is None else device
        model = model.to(self.device).eval()
        if fold_bn:
            model = fold_batchnorm(model)
        self.model = model.to(memory_format=torch.channels_last).eval()
        self.num_classes = num_classes
        self.type_channels = int(type_channels)
        self.normaliser = normaliser
        self.postprocess = postprocess
        self.postprocess_params = dict(postprocess_params or {})
        self.options = {
            "tile": tile,
            "overlap": overlap,
            "batch_size": batch_size,
            "tta": tta,
            "precision": precision,
        }
        _transforms(tta)  # validate early

    def predict_maps(self, image: np.ndarray, *, softmax: bool = True) -> np.ndarray:
        """Stain-normalise ``image`` and return its ``(H, W, C)`` probability maps (or logits)."""
        image = check_image(image)
        if self.normaliser is not None:
            image = self.normaliser.transform(image)
        return predict_maps(
            self.model,
            image,
            num_classes=self.num_classes,
            device=self.device,
            softmax=softmax,
            type_channels=self.type_channels,
            **self.options,
        )

    def maps_to_labels(self, maps: np.ndarray) -> np.ndarray:
        """Instance labels from maps of :meth:`predict_maps`, with the stored post-processing."""
        from nucseg.postprocess import rule_inputs, to_instances
        from nucseg.quality import drop_oversized

        if self.type_channels:  # the rules read channels after the classes as distances
            maps = maps[..., : maps.shape[-1] - self.type_channels]
        inputs = rule_inputs(maps, num_classes=self.num_classes, method=self.postprocess)
        labels = to_instances(inputs, method=self.postprocess, **self.postprocess_params)
        return drop_oversized(labels)

    def maps_to_types(self, maps: np.ndarray, labels: np.ndarray) -> Any:
        """Each nucleus's voted type (:func:`nucseg.nucleus_types.vote_types`) from the type
        channels of ``maps``; None for a model without a type head."""
        if not self.type_channels:
            return None
        from nucseg.nucleus_types import vote_types

        return vote_types(labels, maps[..., maps.shape[-1] - self.type_channels :])

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Segment ``image``: ``(H, W, 3) uint8`` -> ``(H, W) int32`` instance labels."""
        return self.maps_to_labels(self.predict_maps(image))

    @classmethod
    def load(cls, path: str | Path, **options: Any) -> Predictor:
        """Load a run folder (or a bundled model's folder) written by :func:`nucseg.train.fit`.

        The folder holds ``model.safetensors`` (weights and the arguments that rebuild the
        network), ``thresholds.json`` (post-processing method and parameters) and, if the model
        was trained on stain-normalised images, ``normaliser.json``. ``options`` override the
        prediction settings (e.g. ``tta="d4"``, ``device``).
        """
        from nucseg.models import load_model
        from nucseg.stain import read_normaliser

        folder = Path(path)
        weights = folder / "model.safetensors"
        if not weights.is_file():
            raise FileNotFoundError(f"{folder} holds no model.safetensors: not a model folder")
        model, meta = load_model(weights, return_meta=True)
        post = json.loads((folder / "thresholds.json").read_text())
        normaliser = read_normaliser(folder)
        settings = {**post.get("predict", {}), **options}
        return cls(
            model,
            num_classes=int(meta["num_classes"]),
            normaliser=normaliser,
            postprocess=post["method"],
            postprocess_params=post["params"],
            type_channels=int(meta.get("type_channels") or 0),
            **settings,
        )
