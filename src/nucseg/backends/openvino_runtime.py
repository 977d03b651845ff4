"""The OpenVINO backend: the network exported to ONNX (:mod:`nucseg.models.export`) and compiled
for the CPU, bf16 where the CPU computes it natively (``INFERENCE_PRECISION_HINT``).

The exported file and OpenVINO's compiled blob are cached in
``<cache>/nucseg/openvino/<weights SHA-256>-ov<runtime version>-v<export version>/`` (``<cache>``:
``$NUCSEG_CACHE``, else ``$XDG_CACHE_HOME``, else ``~/.cache``), so a second start neither
exports nor compiles: it reads the blob.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from nucseg.backends.common import (
    check_precision,
    cpu_has_bf16,
    softmax_classes,
    transforms,
    tta_numpy,
)

log = logging.getLogger(__name__)

#: Part of the cache key: raise it when the exported graph's interface changes
#: (:data:`nucseg.models.export.EXPORT_VERSION`; not imported here, which would import torch).
CACHE_VERSION = 1


def available() -> bool:
    """Whether the ``openvino`` package can be imported."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def cache_root() -> Path:
    """``$NUCSEG_CACHE``, else ``$XDG_CACHE_HOME/nucseg``, else ``~/.cache/nucseg``."""
    if os.environ.get("NUCSEG_CACHE"):
        return Path(os.environ["NUCSEG_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "nucseg"


def cache_folder(weights_sha256: str) -> Path:
    """The cache folder of one network's weights for this OpenVINO version."""
    import openvino as ov

    version = re.sub(r"[^0-9A-Za-z.]+", "_", ov.get_version().split("-")[0])
    return cache_root() / "openvino" / f"{weights_sha256[:16]}-ov{version}-v{CACHE_VERSION}"


def ov_precision(precision: str) -> str:
    """OpenVINO's ``INFERENCE_PRECISION_HINT`` for ``precision`` ("auto": bf16 where native;
    "int8": the precision of the int8 network's remaining float operations, bf16 where
    native)."""
    check_precision(precision)
    if precision in ("auto", "int8"):
        precision = "bf16" if cpu_has_bf16() else "fp32"
    return "bf16" if precision == "bf16" else "f32"


class OpenVINOBackend:
    """``predict(tiles) -> maps`` through OpenVINO on the CPU.

    Parameters
    ----------
    model : torch.nn.Module or callable
        The network, or a function returning it: it is needed (and the function called) only
        to export it, once per weights and runtime version (see the module docstring).
    num_classes : int
        Class channels, turned into probabilities by :meth:`predict`; the output may hold any
        number of further channels.
    type_channels : int, optional
        The output's last channels are a type head's logits, turned into probabilities by
        :meth:`predict` too.
    precision : {"auto", "bf16", "fp32", "int8"}
        "auto" is bf16 on CPUs with native bf16 (AMX or AVX512-BF16), else fp32; "int8" runs
        ``int8_network`` instead of the export (:mod:`nucseg.backends.int8`).
    tta : {"none", "flips", "d4"}
        Test-time augmentation, applied to the pixels and undone on the maps.
    weights_sha256 : str, optional
        SHA-256 of the weights file (the cache key); computed from the network's state if None.
    int8_network : Path, optional
        The int8 network's ``model.xml``, needed with ``precision="int8"``.

    Attributes
    ----------
    out_channels : int
        Channels of the maps :meth:`predict` returns.
    probe : Path
        The cache's record of this precision's agreement with torch (see
        :func:`nucseg.backends.make_backend`).
    """

    name = "openvino"

    def __init__(
        self,
        model: Any,
        *,
        num_classes: int,
        type_channels: int = 0,
        precision: str = "auto",
        tta: str = "none",
        weights_sha256: str | None = None,
        int8_network: Path | None = None,
    ) -> None:
        import openvino as ov

        transforms(tta)
        self.num_classes, self.tta = num_classes, tta
        self.type_channels = int(type_channels)
        if precision == "int8" and int8_network is None:
            raise ValueError("precision 'int8' needs the model folder's int8 network")
        self.int8 = precision == "int8"
        self.precision = ov_precision(precision)
        if weights_sha256 is None:
            from nucseg.models.export import weights_digest

            model = materialise(model)
            weights_sha256 = weights_digest(model)
        folder = cache_folder(weights_sha256)
        onnx_path = folder / "model.onnx"
        if not onnx_path.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            from nucseg.models.export import export_onnx

            log.info("exporting the network to %s", onnx_path)
            export_onnx(materialise(model), onnx_path, num_classes=num_classes)
        self.cache = folder
        self.core = ov.Core()
        self.core.set_property({"CACHE_DIR": str(folder / "compiled")})
        self.network = self.core.read_model(str(int8_network if self.int8 else onnx_path))
        self.out_channels = int(self.network.output(0).get_partial_shape()[3].get_length())
        self.probe = folder / f"probe-{'int8' if self.int8 else self.precision}.json"
        self._requests: dict[bool, Any] = {}
        self._request(softmax=tta == "none")  # compiled now: start-up, not the first batch

    def _request(self, *, softmax: bool) -> Any:
        """The infer request of the network, with the class softmax inside the graph or not."""
        if softmax not in self._requests:
            network = (
                with_softmax(self.network, self.num_classes, self.type_channels)
                if softmax
                else self.network
            )
            config = {"INFERENCE_PRECISION_HINT": self.precision, "PERFORMANCE_HINT": "LATENCY"}
            if os.environ.get("NUCSEG_OPENVINO_THREADS"):
                config["INFERENCE_NUM_THREADS"] = int(os.environ["NUCSEG_OPENVINO_THREADS"])
            compiled = self.core.compile_model(network, "CPU", config)
            self._requests[softmax] = compiled.create_infer_request()
        return self._requests[softmax]

    def _forward(self, tiles: np.ndarray, *, softmax: bool = False) -> np.ndarray:
        request = self._request(softmax=softmax)
        request.infer({0: np.ascontiguousarray(tiles, dtype=np.uint8)})
        return np.array(request.get_output_tensor(0).data, dtype=np.float32, copy=True)

    def predict(self, tiles: np.ndarray, *, softmax: bool = True) -> np.ndarray:
        """``(N, H, W, 3) uint8`` tiles -> ``(N, H, W, C)`` float32 maps, as
        :meth:`nucseg.backends.torch_runtime.TorchBackend.predict`. Without TTA the softmax runs
        inside the compiled graph (the type head's too); with TTA, on the mean of the logits, as
        torch does."""
        if softmax and self.tta == "none":
            return self._forward(tiles, softmax=True)
        maps = tta_numpy(self._forward, tiles, self.tta)
        return softmax_classes(maps, self.num_classes, self.type_channels) if softmax else maps


def materialise(model: Any) -> Any:
    """``model`` itself if it is a network, else the network the function ``model`` returns."""
    return model if hasattr(model, "state_dict") else model()


def with_softmax(network: Any, num_classes: int, type_channels: int = 0) -> Any:
    """The OpenVINO model ``network`` (NHWC logits) with a softmax over its first
    ``num_classes`` channels and one over its last ``type_channels`` (a type head's); the
    channels between pass through unchanged.

    The softmaxes run on channel planes (NCHW), between two transposes that OpenVINO folds into
    the network's own last one: slicing and concatenating the channels of NHWC maps cost the
    type head's model about a fifth of its forward pass (0.165 against 0.136 CPU seconds for
    8 tiles, the same maps to 3e-7).
    """
    import openvino.opset13 as ops
    from openvino.preprocess import PrePostProcessor

    channels = network.output(0).get_partial_shape()[3].get_length()
    middle = channels - type_channels
    i64 = np.int64

    def softmax(logits: Any) -> Any:
        planes = ops.transpose(logits, np.array([0, 3, 1, 2], i64))

        def part(start: int, stop: int) -> Any:
            return ops.slice(planes, np.array([start], i64), np.array([stop], i64),
                             np.array([1], i64), np.array([1], i64))  # fmt: skip

        parts = [ops.softmax(part(0, num_classes), 1)]
        if middle > num_classes:
            parts.append(part(num_classes, middle))
        if type_channels:
            parts.append(ops.softmax(part(middle, channels), 1))
        maps = ops.concat(parts, 1) if len(parts) > 1 else parts[0]
        return ops.transpose(maps, np.array([0, 2, 3, 1], i64)).output(0)

    steps = PrePostProcessor(network.clone())
    steps.output(0).postprocess().custom(softmax)
    return steps.build()
