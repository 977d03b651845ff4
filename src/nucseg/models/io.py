"""Saving networks as self-describing safetensors files, and rebuilding them from those alone.

The file's metadata holds the :class:`~nucseg.models.registry.ModelConfig` the network was
built from (``"nucseg.config"``), free-form user metadata (``"nucseg.meta"``, JSON), the format
version and the stored dtype, so :func:`load_model` needs nothing but the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from nucseg.atomic import atomic_write
from nucseg.models.registry import ModelConfig, create_model

FORMAT = "nucseg.model/1"


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module under ``torch.compile`` / DataParallel wrappers."""
    for attribute in ("_orig_mod", "module"):
        inner = getattr(model, attribute, None)
        if isinstance(inner, torch.nn.Module):
            return _unwrap(inner)
    return model


def save_model(
    path: str | os.PathLike,
    model: torch.nn.Module,
    meta: dict[str, Any] | None = None,
    *,
    fp16: bool = False,
) -> Path:
    """Write ``model``'s weights and the arguments that rebuild it to a safetensors file.

    Parameters
    ----------
    path : path-like
        Output file (conventionally ``*.safetensors``); written atomically.
    model : torch.nn.Module
        A network made by :func:`~nucseg.models.create_model` (or :func:`load_model`), possibly
        wrapped by ``torch.compile``.
    meta : dict, optional
        JSON-compatible extra information (training step, metrics, ...), returned by
        :func:`load_model` with ``return_meta=True``.
    fp16 : bool, optional
        Store floating-point tensors as float16 (half the size; :func:`load_model` casts back to
        float32). Integer buffers are stored as they are.

    Returns
    -------
    Path
        ``path``.
    """
    from safetensors.torch import save_file

    model = _unwrap(model)
    config = getattr(model, "nucseg_config", None)
    if not isinstance(config, ModelConfig):
        raise ValueError(
            "model has no nucseg_config: build it with nucseg.models.create_model so that the "
            "file can record how to rebuild it"
        )
    try:
        meta_json = json.dumps(meta or {}, sort_keys=True)
    except TypeError as error:
        raise TypeError(f"meta must be JSON-compatible: {error}") from None
    dtype = torch.float16 if fp16 else torch.float32
    state = {}
    for key, tensor in model.state_dict().items():
        tensor = tensor.detach().to("cpu")
        if tensor.is_floating_point():
            tensor = tensor.to(dtype)
        state[key] = tensor.contiguous()  # channels_last weights are not contiguous
    metadata = {
        "format": FORMAT,
        "nucseg.config": config.to_json(),
        "nucseg.meta": meta_json,
        "dtype": str(dtype).removeprefix("torch."),
    }
    path = Path(path)
    with atomic_write(path, overwrite=True) as tmp:
        save_file(state, tmp, metadata=metadata)
    return path


def read_model_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata of a file written by :func:`save_model`, without reading the weights.

    Returns
    -------
    dict
        The :class:`ModelConfig` fields (``name``, ``num_classes``, ``distance_channels``,
        ``encoder_weights``, ``options``) plus ``meta`` (the user's dict) and ``dtype``.
    """
    from safetensors import SafetensorError, safe_open

    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such model file")
    try:
        with safe_open(os.fspath(path), framework="pt") as file:
            metadata = file.metadata() or {}
    except SafetensorError as err:
        raise ValueError(f"{path}: not a readable safetensors file ({err})") from None
    if metadata.get("format") != FORMAT:
        raise ValueError(
            f"{path} was not written by nucseg.models.save_model (format "
            f"{metadata.get('format')!r}, expected {FORMAT!r})"
        )
    config = json.loads(metadata["nucseg.config"])
    return {**config, "meta": json.loads(metadata["nucseg.meta"]), "dtype": metadata["dtype"]}


def load_model(
    path: str | os.PathLike, *, device: str | torch.device = "cpu", return_meta: bool = False
) -> torch.nn.Module | tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the network saved by :func:`save_model` from the file alone.

    Parameters
    ----------
    path : path-like
        A file written by :func:`save_model`.
    device : str or torch.device, optional
        Where to put the network.
    return_meta : bool, optional
        Also return :func:`read_model_metadata`'s dict.

    Returns
    -------
    torch.nn.Module or (torch.nn.Module, dict)
        The network in float32 and eval mode (call ``.train()`` to fine-tune), with its
        ``nucseg_config`` and, as ``nucseg_meta``, the user's metadata.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    info = read_model_metadata(path)
    config = ModelConfig(
        name=info["name"],
        num_classes=info["num_classes"],
        distance_channels=info["distance_channels"],
        encoder_weights=info["encoder_weights"],
        options=info["options"],
        type_channels=info.get("type_channels", 0),
    )
    model = create_model(
        config.name,
        num_classes=config.num_classes,
        distance_channels=config.distance_channels,
        type_channels=config.type_channels,
        **config.options,
    )
    try:
        tensors = load_file(path)
    except SafetensorError as err:  # e.g. a truncated file whose header is intact
        raise ValueError(f"{path}: damaged safetensors file ({err})") from None
    state = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}
    model.load_state_dict(state, strict=True)
    model.nucseg_config = config  # keeps the provenance of the encoder weights
    model.nucseg_meta = info["meta"]
    model.to(device).eval()
    return (model, info) if return_meta else model
