"""Batch-norm folding: the folded network computes the same maps, or is not used."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nucseg.models import create_model
from nucseg.models.fuse import fold_batchnorm


def _batch_norms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def _randomise_statistics(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial running statistics and affine parameters, as after training."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)


@pytest.mark.parametrize("name", ["unet-efficientnet-lite0", "unet-resnet18"])
def test_folded_unet_has_no_batch_norm_and_the_same_output(name):
    model = create_model(name, num_classes=3, encoder_weights=None)
    _randomise_statistics(model)
    model.eval()
    x = torch.rand(2, 3, 96, 128, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = model(x)
    folded = fold_batchnorm(model)
    assert folded is not model
    assert _batch_norms(model) > 0 and _batch_norms(folded) == 0
    with torch.inference_mode():
        got = folded(x)
    torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-3)
    with torch.inference_mode():  # the original is left as it was
        torch.testing.assert_close(model(x), expected)


class _SharedOutput(nn.Module):
    """A convolution whose output is read twice, once past its batch norm: not foldable."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.bn(y) + y


def test_a_batch_norm_whose_input_is_read_elsewhere_is_not_folded():
    model = _SharedOutput()
    _randomise_statistics(model)
    assert fold_batchnorm(model) is model  # the copy's output differs: the original is kept


def test_a_network_without_batch_norm_is_returned_as_it_is():
    model = nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU())
    assert fold_batchnorm(model) is model
