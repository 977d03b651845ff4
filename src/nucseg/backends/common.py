"""What every backend shares: the CPU's bf16 support, test-time augmentation of NHWC tiles and
the softmax of the class channels, in NumPy (no torch here)."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

TTA_MODES = ("none", "flips", "d4")
PRECISIONS = ("auto", "bf16", "fp32", "int8")  # int8: OpenVINO only (nucseg.backends.int8)


@functools.cache
def cpu_has_bf16() -> bool:
    """True if this CPU computes bfloat16 natively (AMX or AVX512-BF16 in /proc/cpuinfo)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def transforms(tta: str) -> list[tuple[int, bool]]:
    """(number of 90-degree rotations, flip columns) pairs of each TTA mode."""
    if tta not in TTA_MODES:
        raise ValueError(f"tta must be one of {TTA_MODES}, got {tta!r}")
    if tta == "none":
        return [(0, False)]
    if tta == "flips":
        return [(0, False), (0, True), (2, False), (2, True)]
    return [(k, f) for k in range(4) for f in (False, True)]


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`; else a ValueError naming them."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be 'auto', 'bf16', 'fp32' or 'int8', got {precision!r}")
    return precision


def tta_numpy(forward, tiles: np.ndarray, tta: str) -> np.ndarray:
    """Mean of ``forward(tiles)`` over the TTA transforms, each mapped back to the input frame.

    ``tiles`` are ``(N, H, W, 3)`` and ``forward`` returns ``(N, H, W, C)``: rows and columns are
    axes 1 and 2 of both (the NumPy twin of :func:`nucseg.backends.torch_runtime.forward_tta`).
    """
    plan = transforms(tta)
    if len(plan) == 1:
        return forward(tiles)
    total = None
    for k, flip in plan:
        x = np.rot90(tiles, k, axes=(1, 2)) if k else tiles
        x = x[:, :, ::-1] if flip else x
        out = forward(np.ascontiguousarray(x))
        out = out[:, :, ::-1] if flip else out
        out = np.rot90(out, -k, axes=(1, 2)) if k else out
        total = out.astype(np.float32) if total is None else total + out
    return total / len(plan)


def softmax_classes(maps: np.ndarray, num_classes: int, type_channels: int = 0) -> np.ndarray:
    """Softmax over the first ``num_classes`` channels of ``(..., C)`` logits, and over the last
    ``type_channels`` (a type head's), in place; the channels between (distances) are left as
    they are."""
    _softmax_in_place(maps, 0, num_classes)
    if type_channels:
        _softmax_in_place(maps, maps.shape[-1] - type_channels, maps.shape[-1])
    return maps


def _softmax_in_place(maps: np.ndarray, start: int, stop: int) -> None:
    logits = maps[..., start:stop]
    logits -= logits.max(axis=-1, keepdims=True)
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=-1, keepdims=True)
    maps[..., start:stop] = logits


def probe_tile(size: int = 256) -> np.ndarray:
    """A fixed ``(1, size, size, 3) uint8`` H&E-like test tile: pink with dark purple blobs."""
    rows, cols = np.mgrid[:size, :size]
    blobs = (np.sin(rows / 9.0) * np.cos(cols / 7.0) > 0.55) | ((rows // 40 + cols // 40) % 5 == 0)
    tile = np.empty((size, size, 3), dtype=np.uint8)
    tile[:] = (230, 170, 200)
    tile[blobs] = (90, 50, 140)
    return tile[None]


def weights_metadata(path: str | Path) -> dict:
    """The network's settings (``name``, ``num_classes``, ...) recorded in a ``model.safetensors``
    written by :func:`nucseg.models.save_model`, read from the file's JSON header alone (no torch:
    a backend that has the network cached need not import it).

    Raises
    ------
    ValueError
        If the file has no readable safetensors header with nucseg's settings.
    """
    import json
    import struct

    try:
        with open(path, "rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            if not 0 < size < 100_000_000:
                raise ValueError(f"header size {size}")
            header = json.loads(fh.read(size))
        return json.loads(header["__metadata__"]["nucseg.config"])
    except (OSError, ValueError, KeyError, TypeError, struct.error) as error:
        raise ValueError(f"{path}: not a readable nucseg model file ({error})") from None


def cuda_possible() -> bool:
    """Whether an NVIDIA driver is loaded (without importing torch): if not, torch has no GPU."""
    return Path("/proc/driver/nvidia/version").exists()
