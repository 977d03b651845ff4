"""The second stage of GB U-Net (Lagree et al. 2021): a U-Net with a plain, dropout encoder.

The paper's GB U-Net feeds the colour-normalised image concatenated with the last-layer
(pre-softmax) feature maps of three first-stage U-Nets to a second U-Net whose encoder repeats
3x3 convolution, batch normalisation, ReLU and dropout; its decoder is that of the other U-Nets
(upsample, concatenate the skip, two 3x3 conv-BN-ReLU) and a 1x1 convolution gives the logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from nucseg.models.registry import register_model


def _conv(c_in: int, c_out: int, dropout: float = 0.0) -> list[nn.Module]:
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]
    if dropout > 0:
        layers.append(nn.Dropout2d(dropout))
    return layers


class PlainUNet(nn.Module):
    """U-Net whose encoder blocks are two (conv 3x3, BN, ReLU, Dropout) layers, then max-pool."""

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        widths: Sequence[int] = (32, 64, 128, 256, 512),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.encoder = nn.ModuleList()
        c = in_channels
        for width in widths:
            self.encoder.append(
                nn.Sequential(*_conv(c, width, dropout), *_conv(width, width, dropout))
            )
            c = width
        self.decoder = nn.ModuleList()
        for skip in reversed(widths[:-1]):
            self.decoder.append(nn.Sequential(*_conv(c + skip, skip), *_conv(skip, skip)))
            c = skip
        self.segmentation_head = nn.Conv2d(c, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for index, block in enumerate(self.encoder):
            if index:
                x = nn.functional.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        for block, skip in zip(self.decoder, reversed(skips[:-1]), strict=True):
            x = nn.functional.interpolate(x, scale_factor=2, mode="nearest")
            x = block(torch.cat([x, skip], dim=1))
        return self.segmentation_head(x)


@register_model("gb-unet", size_multiple=16, min_size=16,
                note="GB U-Net's second stage; in_channels = 3 + the stage-one logits")  # fmt: skip
def build_gb_unet(
    *,
    num_classes: int,
    distance_channels: int = 0,
    encoder_weights: str | None = None,
    in_channels: int = 3,
    widths: Sequence[int] = (32, 64, 128, 256, 512),
    dropout: float = 0.1,
    **unused: Any,
) -> nn.Module:
    """The GB U-Net second stage; ``encoder_weights`` must be None (no pretrained encoder)."""
    if encoder_weights is not None:
        raise ValueError("gb-unet has no pretrained encoder: encoder_weights must be None")
    if unused:
        raise TypeError(f"unknown gb-unet options {sorted(unused)}")
    return PlainUNet(in_channels=in_channels, out_channels=num_classes + distance_channels,
                     widths=widths, dropout=dropout)  # fmt: skip
