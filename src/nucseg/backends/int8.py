"""int8 networks for the OpenVINO backend: NNCF post-training quantisation, kept beside the model.

A model folder may hold ``int8/`` (a bundled model: the user's cache, :func:`folder_for`):
``model.xml`` and ``model.bin`` (the OpenVINO network with int8
weights and activations, quantised by NNCF from the fp32 export and calibrated on the model's
training tiles) and ``int8.json``, the record of how it was made and how it scored: the SHA-256 of
the weights it was quantised from, and the validation AJI of fp32 and int8 on the model's own
validation images. ``nucseg quantise MODEL`` writes it (:mod:`nucseg.quantise`).

The int8 network is used only if its record matches the folder's weights and its validation AJI
is within :data:`TOLERANCE` of fp32's (``passes``): asked for by ``precision="int8"``, or chosen by
``precision="auto"`` on a CPU without native bf16, where it is the fastest network (measured in
``results/backends/int8.json``; with AMX, bf16 is faster still). Reading the network needs only
OpenVINO; making it needs NNCF (``pip install nncf``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: The sub-folder of a model folder that holds its int8 network.
FOLDER = "int8"
#: Largest loss of mean validation AJI (fp32 minus int8) for the int8 network to be used.
TOLERANCE = 0.005


def folder_for(model_dir: str | Path, weights_sha256: str | None = None) -> Path:
    """Where the int8 network of ``model_dir`` lives: ``model_dir/int8``, except for a model
    bundled inside the installed package, whose int8 network goes to the user's cache
    (``<cache>/nucseg/int8/<weights SHA-256>``; see :func:`nucseg.backends.openvino_runtime.
    cache_root`), so that quantising never writes into the package."""
    from nucseg.backends.openvino_runtime import cache_root

    model_dir = Path(model_dir)
    bundled = Path(__file__).resolve().parents[1] / "data" / "models"
    if model_dir.resolve().parent != bundled:
        return model_dir / FOLDER
    if weights_sha256 is None:
        from nucseg.provenance import file_sha256

        weights_sha256 = file_sha256(model_dir / "model.safetensors")
    return cache_root() / FOLDER / weights_sha256[:16]


def record(
    model_dir: str | Path | None, weights_sha256: str | None = None
) -> dict[str, Any] | None:
    """The int8 network's ``int8.json`` (:func:`folder_for`), or None if it has none."""
    if model_dir is None:
        return None
    path = folder_for(model_dir, weights_sha256) / "int8.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def problem(model_dir: str | Path | None, weights_sha256: str | None) -> str | None:
    """Why the folder's int8 network cannot be used (None if it can)."""
    if model_dir is None:
        return "precision 'int8' needs a model folder that holds an int8 network"
    found = record(model_dir, weights_sha256)
    if found is None:
        return f"{model_dir} has no int8 network (make one with: nucseg quantise {model_dir})"
    if weights_sha256 is not None and found.get("weights_sha256") != weights_sha256:
        theirs, where = str(found.get("weights_sha256"))[:12], folder_for(model_dir, weights_sha256)
        return (
            f"{where} was quantised from other weights (SHA-256 {theirs}..., the folder's are "
            f"{weights_sha256[:12]}...): run nucseg quantise {model_dir} --overwrite"
        )
    where = folder_for(model_dir, weights_sha256)
    if not (where / "model.xml").is_file():
        return f"{where} has no model.xml"
    if not found.get("passes"):
        gap = found.get("validation", {}).get("gap")
        return (
            f"{model_dir}'s int8 network lost {gap} validation AJI against fp32 (more than "
            f"{TOLERANCE}): not used"
        )
    return None


def network_path(model_dir: str | Path | None, weights_sha256: str | None) -> Path:
    """``int8/model.xml`` of a folder whose int8 network may be used; else a ValueError saying
    why not (:func:`problem`)."""
    why = problem(model_dir, weights_sha256)
    if why is not None:
        raise ValueError(why)
    return folder_for(model_dir, weights_sha256) / "model.xml"


def usable(model_dir: str | Path | None, weights_sha256: str | None) -> bool:
    """Whether the folder's int8 network may be used (see :func:`problem`)."""
    return model_dir is not None and problem(model_dir, weights_sha256) is None


def quantise(network: Any, tiles: list[Any], *, fast_bias_correction: bool = True) -> Any:
    """NNCF's post-training quantisation of the OpenVINO model ``network`` (uint8 NHWC input),
    calibrated on ``tiles`` (each a ``(1, H, W, 3) uint8`` array): weights and activations int8,
    symmetric weights and asymmetric activations (NNCF's "mixed" preset)."""
    try:
        import nncf
    except ImportError as error:  # one clear line rather than a traceback
        raise ImportError("making an int8 network needs NNCF: pip install nncf") from error
    return nncf.quantize(
        network,
        nncf.Dataset(tiles),
        subset_size=len(tiles),
        preset=nncf.QuantizationPreset.MIXED,
        fast_bias_correction=fast_bias_correction,
    )
