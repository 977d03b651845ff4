"""The torch backend (the reference) and the torch helpers the training loop shares with it.

Runs in bfloat16 autocast on CPUs with native bf16 (AMX or AVX512-BF16), fp32 on other CPUs, and
mixed precision on a GPU when one is present.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from nucseg.backends.common import check_precision, cpu_has_bf16, transforms
from nucseg.models.registry import input_stats  # noqa: F401  (re-exported)

#: Per-channel mean and standard deviation of inputs when the model names none (ImageNet's).
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def default_device() -> torch.device:
    """The first CUDA GPU if there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast(device: torch.device, precision: str = "auto") -> contextlib.AbstractContextManager:
    """Autocast context for ``precision`` in {"auto", "bf16", "fp32"} on ``device``.

    "auto" is bf16 on a GPU with bf16 support and on a CPU with native bf16, else fp32.
    """
    check_precision(precision)
    if precision == "int8":
        raise ValueError("precision 'int8' runs on the openvino backend, not on torch")
    if precision == "auto":
        if device.type == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        else:
            precision = "bf16" if cpu_has_bf16() else "fp32"
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


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


@torch.inference_mode()
def forward_tta(model: torch.nn.Module, x: torch.Tensor, *, tta: str = "none") -> torch.Tensor:
    """Mean of the model's logits over the TTA transforms, each mapped back to the input frame."""
    total = None
    plan = transforms(tta)
    for k, flip in plan:
        y = torch.rot90(x, k, dims=(2, 3)) if k else x
        y = torch.flip(y, dims=(3,)) if flip else y
        out = model(y).float()
        out = torch.flip(out, dims=(3,)) if flip else out
        out = torch.rot90(out, -k, dims=(2, 3)) if k else out
        total = out if total is None else total + out
    return total / len(plan)


class TorchBackend:
    """``predict(tiles) -> maps`` with the torch network itself (the reference backend).

    Parameters
    ----------
    model : torch.nn.Module
        Network returning ``(N, C, H, W)`` logits, the first ``num_classes`` class scores.
    num_classes : int
        Class channels, turned into probabilities by :meth:`predict`.
    type_channels : int, optional
        The output's last channels are a type head's logits, turned into probabilities too.
    device : torch.device
        Where to run.
    precision : {"auto", "bf16", "fp32"}
        See :func:`autocast`.
    tta : {"none", "flips", "d4"}
        Test-time augmentation.
    """

    name = "torch"

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        num_classes: int,
        device: torch.device,
        type_channels: int = 0,
        precision: str = "auto",
        tta: str = "none",
    ) -> None:
        self.model, self.num_classes, self.device = model, num_classes, device
        self.type_channels = int(type_channels)
        self.precision, self.tta = check_precision(precision), tta
        transforms(tta)  # validate early
        self.mean, self.std = input_stats(model)
        config = getattr(model, "nucseg_config", None)
        #: Channels of the maps (from the network's settings; None when it has none).
        self.out_channels = None if config is None else int(config.out_channels)

    def predict(self, tiles: np.ndarray, *, softmax: bool = True) -> np.ndarray:
        """``(N, H, W, 3) uint8`` tiles -> ``(N, H, W, C)`` float32 maps: class probabilities
        (logits with ``softmax=False``), then any further channels as the network gives them,
        the last ``type_channels`` as type probabilities (logits without softmax)."""
        with torch.inference_mode(), autocast(self.device, self.precision):
            x = to_tensor(tiles, self.device, mean=self.mean, std=self.std)
            out = forward_tta(self.model, x, tta=self.tta)
            if softmax:
                out[:, : self.num_classes] = torch.softmax(out[:, : self.num_classes], dim=1)
                if self.type_channels:
                    t = out.shape[1] - self.type_channels
                    out[:, t:] = torch.softmax(out[:, t:].float(), dim=1).to(out.dtype)
            return out.permute(0, 2, 3, 1).cpu().numpy()
