"""Tiled, batched network prediction: image -> probability maps -> instance labels.

``image -> normalise stain -> pad_to -> tile_grid -> backend.predict on batches (+ TTA) ->
MapStitcher -> maps -> postprocess.to_instances``. The network runs through a backend
(:mod:`nucseg.backends`: torch, the reference, or OpenVINO); the torch helpers that used to live
here (``autocast``, ``to_tensor``, ``forward_tta``, ...) are in
:mod:`nucseg.backends.torch_runtime` and re-exported.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from nucseg._checks import check_image
from nucseg.backends import check_backend, make_backend
from nucseg.backends.common import TTA_MODES, cpu_has_bf16, weights_metadata  # noqa: F401
from nucseg.backends.common import transforms as _transforms
from nucseg.tiling import MapStitcher, pad_to, tile_grid

#: The torch helpers re-exported from :mod:`nucseg.backends.torch_runtime`, imported on first use
#: (importing this module does not import torch: a network cached for OpenVINO runs without it).
_TORCH_NAMES = ("MEAN", "STD", "TorchBackend", "autocast", "default_device", "forward_tta",
                "input_stats", "to_tensor")  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _TORCH_NAMES:
        from nucseg.backends import torch_runtime

        return getattr(torch_runtime, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


log = logging.getLogger(__name__)

#: Prediction settings a user may override when loading a model (see :meth:`Predictor.load`).
PREDICT_OPTIONS = ("tile", "overlap", "batch_size", "tta", "precision", "backend")


def _batches(grid: list, size: int) -> Iterator[list]:
    for start in range(0, len(grid), size):
        yield grid[start : start + size]


def predict_maps(
    model: Any,
    image: np.ndarray,
    *,
    num_classes: int,
    tile: int = 256,
    overlap: float = 0.5,
    batch_size: int = 8,
    tta: str = "none",
    device: Any = None,
    precision: str = "auto",
    softmax: bool = True,
    type_channels: int = 0,
    backend: Any = "torch",
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
        Where torch runs; default :func:`default_device`.
    precision : {"auto", "bf16", "fp32", "int8"}, optional
        See :func:`autocast`; "int8" needs a model folder's int8 network (:class:`Predictor`).
    softmax : bool, optional
        Turn the class logits into probabilities (default); False keeps the logits (the
        pre-softmax maps that GB U-Net stacks).
    type_channels : int, optional
        The last ``type_channels`` channels are a type head's logits, also turned into
        probabilities (their own softmax) when ``softmax``.
    backend : {"torch", "openvino", "auto"} or a backend, optional
        What runs the network (:mod:`nucseg.backends`); default torch, the reference.

    Returns
    -------
    (H, W, C) float32 array
        Class probabilities (summing to 1 over the first ``num_classes`` channels), then the raw
        regression channels, then any type probabilities, blended over tiles with a Hann window.
    """
    image = check_image(image)
    if isinstance(backend, str):
        model.eval()
        backend = make_backend(
            model, backend, num_classes=num_classes, type_channels=type_channels, device=device,
            precision=precision, tta=tta,
        )  # fmt: skip
    padded, crop = pad_to(image, (tile, tile))
    grid = tile_grid(padded.shape[:2], tile=tile, overlap=overlap)
    stitcher = MapStitcher(padded.shape[:2], grid=grid)
    for batch in _batches(grid, batch_size):
        maps = backend.predict(np.stack([padded[s] for s in batch]), softmax=softmax)
        for tile_map, slices in zip(maps, batch, strict=True):
            stitcher.add(tile_map, slices)
    return np.ascontiguousarray(stitcher.result(in_place=True)[crop], dtype=np.float32)


def runtime_of(backend: Any) -> dict[str, str]:
    """``{"backend", "precision"}`` of a backend as it runs: "int8" for an int8 network, else
    the float precision ("bf16" or "fp32") that "auto" resolved to."""
    if getattr(backend, "int8", False):
        precision = "int8"
    else:
        precision = str(getattr(backend, "precision", "auto"))
        if precision == "auto":
            from nucseg.backends.common import cpu_has_bf16

            precision = "bf16" if cpu_has_bf16() else "fp32"
        precision = {"f32": "fp32"}.get(precision, precision)
    name = str(getattr(backend, "name", type(backend).__name__))
    return {"backend": name, "precision": precision}


class Predictor:
    """A trained network with everything needed to turn an image into instance labels.

    Parameters
    ----------
    model : torch.nn.Module or callable
        The network, or a function returning it (:meth:`load` gives one: the network is then
        built only when it is needed, which a network cached for OpenVINO is not).
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
    backend : {"auto", "torch", "openvino"}, optional
        What runs the network (:func:`nucseg.backends.make_backend`), built at the first
        prediction: "auto" (default) is OpenVINO on a CPU where it is installed and agrees with
        torch on a probe tile, else torch.
    fold_bn : bool, optional
        Fold the network's batch norms into its convolutions
        (:func:`nucseg.models.fuse.fold_batchnorm`): the same maps, about a fifth faster on a
        CPU.
    type_channels : int, optional
        Channels of the network's type head (0: none), the last of its output; see
        :mod:`nucseg.nucleus_types`.
    weights_sha256 : str, optional
        SHA-256 of the weights file: the key of the OpenVINO backend's cache (computed from the
        network's state if None).
    model_dir : path-like, optional
        The model's folder (set by :meth:`load`): where its int8 network is
        (:mod:`nucseg.backends.int8`).
    """

    def __init__(
        self,
        model: Any,
        *,
        num_classes: int,
        normaliser: Any = None,
        postprocess: str = "watershed",
        postprocess_params: dict[str, Any] | None = None,
        tile: int = 256,
        overlap: float = 0.5,
        batch_size: int = 8,
        tta: str = "none",
        device: Any = None,
        precision: str = "auto",
        backend: str = "auto",
        fold_bn: bool = True,
        type_channels: int = 0,
        weights_sha256: str | None = None,
        model_dir: str | Path | None = None,
    ) -> None:
        self._device, self._fold_bn = device, fold_bn
        self.model_dir = model_dir
        self._source, self._model = model, None
        if hasattr(model, "state_dict"):  # a network: prepared now, as before
            self._model = self._prepare(model)
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
            "backend": check_backend(backend),
        }
        _transforms(tta)  # validate early
        self.weights_sha256 = weights_sha256
        self._backend: Any = None

    def _prepare(self, model: Any) -> Any:
        import torch

        from nucseg.models.fuse import fold_batchnorm

        model = model.to(self.device).eval()
        if self._fold_bn:
            model = fold_batchnorm(model)
        return model.to(memory_format=torch.channels_last).eval()

    @property
    def device(self) -> Any:
        """Where torch runs the network (default: a GPU if there is one, else the CPU)."""
        if self._device is None:
            from nucseg.backends.torch_runtime import default_device

            self._device = default_device()
        return self._device

    @property
    def model(self) -> Any:
        """The torch network (built at first use when a function was given)."""
        if self._model is None:
            self._model = self._prepare(self._source())
        return self._model

    @property
    def backend(self) -> Any:
        """The backend running the network (:mod:`nucseg.backends`), built at first use."""
        if self._backend is None:
            options = self.options
            self._backend = make_backend(
                lambda: self.model, options["backend"], num_classes=self.num_classes,
                type_channels=self.type_channels, device=self._device,
                precision=options["precision"], tta=options["tta"],
                weights_sha256=self.weights_sha256, model_dir=self.model_dir,
            )  # fmt: skip
            log.info("network backend: %s", runtime_of(self._backend))
        return self._backend

    @property
    def runtime(self) -> dict[str, str]:
        """What runs the network, as resolved: ``{"backend": ..., "precision": ...}``."""
        return runtime_of(self.backend)

    def predict_maps(self, image: np.ndarray, *, softmax: bool = True) -> np.ndarray:
        """Stain-normalise ``image`` and return its ``(H, W, C)`` probability maps (or logits)."""
        image = check_image(image)
        if self.normaliser is not None:
            image = self.normaliser.transform(image)
        options = {k: v for k, v in self.options.items() if k != "backend"}
        return predict_maps(
            None,
            image,
            num_classes=self.num_classes,
            softmax=softmax,
            type_channels=self.type_channels,
            backend=self.backend,
            **options,
        )

    def maps_to_labels(self, maps: np.ndarray) -> np.ndarray:
        """Instance labels from maps of :meth:`predict_maps`, with the stored post-processing."""
        from nucseg.postprocess import rule_inputs, to_instances
        from nucseg.quality import drop_oversized

        if self.type_channels:  # the rules read channels after the classes as distances
            # a contiguous copy: the rules read these channels several times, and a view that
            # strides over the type channels made them a fifth slower than the copy costs
            maps = np.ascontiguousarray(maps[..., : maps.shape[-1] - self.type_channels])
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
        from nucseg.stain import read_normaliser

        folder = Path(path)
        weights = folder / "model.safetensors"
        if not weights.is_file():
            raise FileNotFoundError(f"{folder} holds no model.safetensors: not a model folder")
        meta = weights_metadata(weights)  # the header only: the network is built when needed
        post = json.loads((folder / "thresholds.json").read_text())
        normaliser = read_normaliser(folder)
        settings = {**post.get("predict", {}), **options}
        settings.setdefault("weights_sha256", hashlib.sha256(weights.read_bytes()).hexdigest())
        settings.setdefault("model_dir", folder)

        def network() -> Any:
            from nucseg.models import load_model

            return load_model(weights)

        return cls(
            network,
            num_classes=int(meta["num_classes"]),
            normaliser=normaliser,
            postprocess=post["method"],
            postprocess_params=post["params"],
            type_channels=int(meta.get("type_channels") or 0),
            **settings,
        )
