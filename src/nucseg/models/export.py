"""A network as an ONNX file that takes pixels: ``(N, H, W, 3) uint8`` in, ``(N, H, W, C)``
float32 logits out (standardisation inside the graph), rows, columns and batch dynamic.

The file's metadata names what a reader needs: ``num_classes``, ``out_channels``, the encoder's
``size_multiple`` and the weights' SHA-256. Used by ``nucseg export`` (:func:`export_model`) and
by the OpenVINO backend (:mod:`nucseg.backends`), which compiles the same file.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import warnings
from pathlib import Path
from typing import Any

import torch

from nucseg.models.registry import input_stats

#: Version of the exported graph's interface; part of the OpenVINO cache key.
EXPORT_VERSION = 1
OPSET = 17


class PixelModel(torch.nn.Module):
    """``model`` behind its input standardisation, in NHWC: ``uint8 pixels -> logits``."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        mean, std = input_stats(model)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = (pixels.permute(0, 3, 1, 2).float() - self.mean) / self.std
        return self.model(x).permute(0, 2, 3, 1)


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 of the network's state (names, shapes, dtypes and bytes of every tensor), for a
    network that was not loaded from a file."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        digest.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def export_onnx(
    model: torch.nn.Module,
    out: str | os.PathLike,
    *,
    num_classes: int,
    size: int = 256,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` (as :class:`PixelModel`) to the ONNX file ``out``, atomically.

    Parameters
    ----------
    model : torch.nn.Module
        The network, on the CPU; it is traced in float32 on one ``size`` x ``size`` input.
    out : path-like
        The ``.onnx`` file written (under a temporary name, then renamed).
    num_classes : int
        Class channels of the output, recorded in the metadata.
    size : int, optional
        Side of the tracing input (a multiple of the encoder's output stride).
    metadata : dict, optional
        More ``key: value`` pairs for the file's metadata (values JSON-encoded unless strings).
    """
    import onnx

    out = Path(out)
    wrapped = PixelModel(model).float().eval()
    example = torch.zeros((1, size, size, 3), dtype=torch.uint8)
    with torch.inference_mode():
        channels = int(wrapped(example).shape[-1])
    tmp = out.with_name(f".{out.name}.tmp{secrets.token_hex(4)}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(
                wrapped, (example,), str(tmp), input_names=["pixels"], output_names=["logits"],
                dynamic_axes={"pixels": {0: "n", 1: "rows", 2: "cols"},
                              "logits": {0: "n", 1: "rows", 2: "cols"}},
                opset_version=OPSET, dynamo=False,
            )  # fmt: skip
        graph = onnx.load(str(tmp))
        meta = {"num_classes": num_classes, "out_channels": channels,
                "export_version": EXPORT_VERSION, **(metadata or {})}  # fmt: skip
        for key, value in meta.items():
            entry = graph.metadata_props.add()
            entry.key, entry.value = key, value if isinstance(value, str) else json.dumps(value)
        onnx.save(graph, str(tmp))
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``key: value`` metadata of an ONNX file written by :func:`export_onnx`."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in graph.metadata_props}


def export_model(folder: str | os.PathLike, out: str | os.PathLike) -> dict[str, Any]:
    """Export the network of a model folder (``model.safetensors``) to the ONNX file ``out``;
    returns the metadata written (model name, channels, the weights' SHA-256, ...)."""
    from nucseg.models.io import load_model
    from nucseg.models.registry import get_model_entry

    weights = Path(folder) / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"{folder} holds no model.safetensors: not a model folder")
    model, meta = load_model(weights, return_meta=True)
    entry = get_model_entry(meta["name"])
    info = {
        "model": meta["name"],
        "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
        "size_multiple": entry.size_multiple,
        "min_size": entry.min_size,
    }
    export_onnx(model, out, num_classes=int(meta["num_classes"]), size=max(64, entry.min_size),
                metadata=info)  # fmt: skip
    return read_metadata(out)
