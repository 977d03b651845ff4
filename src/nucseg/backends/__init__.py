"""Inference backends: torch (the reference) and OpenVINO behind one contract.

A backend's ``predict(tiles, *, softmax=True) -> maps`` takes ``(N, H, W, 3) uint8`` tiles and
returns ``(N, H, W, C)`` float32 maps: the probabilities of the first ``num_classes`` channels,
then whatever further channels the network has (distances), then the probabilities of its last
``type_channels`` (a type head's), averaged over the test-time augmentation. The engine
(:mod:`nucseg.infer`) tiles, calls it and stitches.

``make_backend(model, name="auto", ...)``: "auto" is OpenVINO on a CPU when it is installed and
its maps agree with torch's on a probe tile (:data:`AUTO_TOLERANCE`), else torch.

Precision "int8" runs the model folder's int8 network on OpenVINO (:mod:`nucseg.backends.int8`);
precision "auto" takes it on a CPU without native bf16 when the folder holds one that passed its
validation check, since there it is the fastest (bf16 elsewhere).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Protocol

import numpy as np

from nucseg.backends.common import (  # noqa: F401
    TTA_MODES,
    check_precision,
    cpu_has_bf16,
    cuda_possible,
    probe_tile,
    transforms,
)

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "openvino")

#: Largest mean absolute difference of class probabilities between OpenVINO and torch on the probe
#: tile (:func:`nucseg.backends.common.probe_tile`) for "auto" to choose OpenVINO.
AUTO_TOLERANCE = 0.02


class Backend(Protocol):
    name: str
    type_channels: int

    def predict(self, tiles: np.ndarray, *, softmax: bool = True) -> np.ndarray: ...


def check_backend(name: str) -> str:
    """``name`` if it is one of :data:`BACKENDS`; else a ValueError listing them."""
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    return name


def make_backend(
    model: Any,
    name: str = "auto",
    *,
    num_classes: int,
    type_channels: int = 0,
    device: Any = None,
    precision: str = "auto",
    tta: str = "none",
    weights_sha256: str | None = None,
    model_dir: Any = None,
) -> Backend:
    """The backend ``name`` for ``model`` (see the module docstring for "auto").

    Parameters
    ----------
    model : torch.nn.Module or callable
        The network, or a function returning it, called only when the network is needed: for
        torch, or to export it for OpenVINO when the cache does not hold it yet.
    name : {"auto", "torch", "openvino"}
        The backend.
    num_classes : int
        Class channels of the output.
    type_channels : int, optional
        The output's last channels are a type head's; ``predict`` gives their probabilities.
    device : torch.device, optional
        Where torch runs (default: a GPU if there is one); OpenVINO runs on the CPU.
    precision, tta : str
        As in :func:`nucseg.infer.predict_maps`.
    weights_sha256 : str, optional
        SHA-256 of the weights file, OpenVINO's cache key.
    model_dir : path-like, optional
        The model's folder, where its int8 network is (precision "int8", or "auto" on a CPU
        without native bf16).

    Raises
    ------
    ValueError
        If ``name`` is unknown, "openvino" is asked for a GPU device, or "int8" for torch or for
        a model without a usable int8 network.
    ImportError
        If "openvino" is asked for and the package is not installed.
    """
    from nucseg.backends import int8, openvino_runtime

    check_backend(name)
    check_precision(precision)
    if precision == "int8":  # an int8 network: OpenVINO's, whatever "auto" means here
        if name == "torch":
            raise ValueError("precision 'int8' runs on the openvino backend, not on torch")
        int8.network_path(model_dir, weights_sha256)  # the reason, in one line, if it cannot
        name = "openvino"
    if name == "auto":  # NUCSEG_BACKEND: what "auto" means in this environment (the test suite:
        name = check_backend(os.environ.get("NUCSEG_BACKEND") or "auto")  # torch, in-process)
    if name == "auto" and not (openvino_runtime.available() and _on_cpu(device)):
        name = "torch"
    if name == "torch":
        return _torch_backend(model, num_classes, device, precision, tta, type_channels)
    if not _on_cpu(device):
        raise ValueError(f"the openvino backend runs on the CPU, not on {device}")
    if not openvino_runtime.available():
        raise ImportError("the openvino backend needs the openvino package: pip install openvino")
    if precision == "auto" and not cpu_has_bf16() and int8.usable(model_dir, weights_sha256):
        precision = "int8"  # the fastest on such a CPU, and checked on the validation images
    network = int8.network_path(model_dir, weights_sha256) if precision == "int8" else None
    try:
        backend = openvino_runtime.OpenVINOBackend(
            model, num_classes=num_classes, type_channels=type_channels, precision=precision,
            tta=tta, weights_sha256=weights_sha256, int8_network=network,
        )  # fmt: skip
        if precision == "int8":  # its agreement is its validation record, not the probe tile
            return backend
        if name == "auto" and not _agrees(backend, model, num_classes, device, precision):
            return _torch_backend(model, num_classes, device, precision, tta, type_channels)
    except Exception as error:  # noqa: BLE001  (auto falls back; an explicit choice fails)
        if name == "openvino":
            raise
        fallback = _torch_backend(  # a damaged model
            model, num_classes, device, precision, tta, type_channels
        )
        log.warning("OpenVINO failed (%s); using torch", error)  # fails here, as itself
        return fallback
    return backend


def _on_cpu(device: Any) -> bool:
    """Whether ``device`` is the CPU; None (the default device) is, unless torch sees a GPU."""
    if device is None:
        if not cuda_possible():
            return True
        from nucseg.backends.torch_runtime import default_device

        device = default_device()
    return getattr(device, "type", str(device)) == "cpu"


def _torch_backend(
    model: Any, num_classes: int, device: Any, precision: str, tta: str, type_channels: int = 0
) -> Any:
    from nucseg.backends.openvino_runtime import materialise
    from nucseg.backends.torch_runtime import TorchBackend, default_device

    return TorchBackend(
        materialise(model), num_classes=num_classes, precision=precision, tta=tta,
        device=default_device() if device is None else device, type_channels=type_channels,
    )  # fmt: skip


def _agrees(backend: Any, model: Any, num_classes: int, device: Any, precision: str) -> bool:
    """Whether OpenVINO's class probabilities agree with torch's on the probe tile (mean
    absolute difference at most :data:`AUTO_TOLERANCE`). Measured once per weights, runtime
    version and precision and kept in the cache (``backend.probe``), so that a cached network
    is used without building the torch one."""
    import json

    if backend.probe.is_file():
        gap = float(json.loads(backend.probe.read_text())["gap"])
    else:
        reference = _torch_backend(model, num_classes, device, precision, backend.tta)
        gap = probe_gap(backend, reference, num_classes)
        tmp = backend.probe.with_name(f".{backend.probe.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps({"gap": gap, "tolerance": AUTO_TOLERANCE}))
        os.replace(tmp, backend.probe)
    if gap > AUTO_TOLERANCE:
        log.warning("OpenVINO's maps differ from torch's by %.3f on the probe: torch", gap)
        return False
    return True


def probe_gap(backend: Backend, reference: Backend, num_classes: int) -> float:
    """Mean absolute difference of the class probabilities of two backends on the probe tile."""
    tile = probe_tile()
    a = backend.predict(tile)[..., :num_classes]
    b = reference.predict(tile)[..., :num_classes]
    return float(np.abs(a - b).mean())
