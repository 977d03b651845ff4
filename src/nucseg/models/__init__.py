"""Segmentation networks: a registry of U-Nets and self-describing weight files.

>>> from nucseg.models import create_model, list_models
>>> "unet-resnet50" in list_models(paper_only=True)
True
>>> model = create_model("unet-resnet18", num_classes=3)  # doctest: +SKIP
>>> model(torch.zeros(1, 3, 256, 256)).shape  # doctest: +SKIP
torch.Size([1, 3, 256, 256])

Every network maps ``(N, 3, H, W)`` float images, H and W multiples of 32, to
``(N, num_classes + distance_channels, H, W)`` logits; see :mod:`nucseg.models.unet`.
"""

from nucseg.models import plain as _plain  # noqa: F401  (registers gb-unet)
from nucseg.models import unet as _unet  # noqa: F401  (registers the U-Nets)
from nucseg.models.export import export_model, export_onnx
from nucseg.models.io import load_model, read_model_metadata, save_model
from nucseg.models.registry import (
    MODELS,
    ModelConfig,
    ModelEntry,
    create_model,
    get_model_entry,
    list_models,
    model_info,
    register_model,
)
from nucseg.models.unet import DEFAULT_DECODER_CHANNELS, SLIM_DECODER_CHANNELS, build_unet
from nucseg.models.weights import convert_lite0_state_dict, load_encoder_weights

__all__ = [
    "DEFAULT_DECODER_CHANNELS",
    "MODELS",
    "SLIM_DECODER_CHANNELS",
    "ModelConfig",
    "ModelEntry",
    "build_unet",
    "convert_lite0_state_dict",
    "create_model",
    "export_model",
    "export_onnx",
    "get_model_entry",
    "list_models",
    "load_encoder_weights",
    "load_model",
    "model_info",
    "read_model_metadata",
    "register_model",
    "save_model",
]
