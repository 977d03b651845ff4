"""Inference backends: torch (the reference) and OpenVINO behind one contract.

A backend's ``predict(tiles, *, softmax=True) -> maps`` takes ``(N, H, W, 3) uint8`` tiles and
returns ``(N, H, W, C)`` float32 maps: the probabilities of the first ``num_classes`` channels,
then whatever further channels the network has (distance, type logits), averaged over the test-time
augmentation. The engine (:mod:`nucseg.infer`) tiles, calls it and stitches.

``make_backend(model, name="auto", ...)``: "auto" is OpenVINO on a CPU when it is installed and
its maps agree with torch's on a probe tile (:data:`AUTO_TOLERANCE`), else torch.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import numpy as np

from nucseg.backends.common import TTA_MODES, cpu_has_bf16, probe_tile, transforms  # noqa: F401

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "openvino")

#: Largest mean absolute difference of class probabilities between OpenVINO and torch on the probe
#: tile (:func:`nucseg.backends.common.probe_tile`) for "auto" to choose OpenVINO.
AUTO_TOLERANCE = 0.02


class Backend(Protocol):
    name: str

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
    device: Any,
    precision: str = "auto",
    tta: str = "none",
    weights_sha256: str | None = None,
) -> Backend:
    """The backend ``name`` for ``model`` (see the module docstring for "auto").

    Raises
    ------
    ValueError
        If ``name`` is unknown, or "openvino" is asked for a GPU device.
    ImportError
        If "openvino" is asked for and the package is not installed.
    """
    from nucseg.backends import openvino_runtime
    from nucseg.backends.torch_runtime import TorchBackend

    check_backend(name)
    reference = TorchBackend(
        model, num_classes=num_classes, device=device, precision=precision, tta=tta
    )
    on_cpu = getattr(device, "type", str(device)) == "cpu"
    if name == "torch" or (name == "auto" and not (on_cpu and openvino_runtime.available())):
        return reference
    if not on_cpu:
        raise ValueError(f"the openvino backend runs on the CPU, not on {device}")
    if name == "openvino" and not openvino_runtime.available():
        raise ImportError("the openvino backend needs the openvino package: pip install openvino")
    try:
        backend = openvino_runtime.OpenVINOBackend(
            model, num_classes=num_classes, precision=precision, tta=tta,
            weights_sha256=weights_sha256,
        )  # fmt: skip
    except Exception as error:  # noqa: BLE001  (auto falls back; an explicit choice fails)
        if name == "openvino":
            raise
        log.warning("OpenVINO failed (%s); using torch", error)
        return reference
    if name == "auto":
        gap = probe_gap(backend, reference, num_classes)
        if gap > AUTO_TOLERANCE:
            log.warning("OpenVINO's maps differ from torch's by %.3f on the probe; torch", gap)
            return reference
    return backend


def probe_gap(backend: Backend, reference: Backend, num_classes: int) -> float:
    """Mean absolute difference of the class probabilities of two backends on the probe tile."""
    tile = probe_tile()
    a = backend.predict(tile)[..., :num_classes]
    b = reference.predict(tile)[..., :num_classes]
    return float(np.abs(a - b).mean())
