"""Access to the real datasets for tests: skip with a reason when absent, fail in CI.

CI sets ``NUCSEG_REQUIRE_DATA=1``, which turns every such skip into a failure.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def _missing(reason: str):
    if os.environ.get("NUCSEG_REQUIRE_DATA") == "1":
        pytest.fail(f"{reason}; NUCSEG_REQUIRE_DATA=1 forbids skipping")
    pytest.skip(reason)


def data_root_or_skip() -> Path:
    """Return the data root (``nucseg.datasets.data_root``), or skip / fail if it is absent."""
    from nucseg.datasets import data_root

    try:
        return data_root()
    except FileNotFoundError as err:
        _missing(f"datasets not found: {err}")


def data_file(relative: str) -> Path:
    """Return the dataset file ``relative`` to the data root, or skip / fail if it is absent."""
    path = data_root_or_skip() / relative
    if not path.exists():
        _missing(f"dataset file {path} not found (set NUCSEG_DATA to the datasets folder)")
    return path


#: Post-processing of :func:`typed_model_folder`'s random network that gives it nuclei to type.
TYPED_THRESHOLDS = {"interior_threshold": 0.7, "foreground_threshold": 0.84, "min_size": 10}


def typed_model_folder(folder: Path, *, type_channels: int = 5) -> Path:
    """A tiny randomly initialised model with a type head (seed 0), saved as a model folder
    with a thresholds.json like the bundled model's (watershed, tile 128, 0.25 um/px)."""
    import json

    import torch

    from nucseg.models import create_model, save_model

    def build(channels: int) -> torch.nn.Module:
        return create_model(
            "unet-resnet18", num_classes=3, type_channels=channels,
            decoder_channels=(32, 16, 16, 8, 8),
        )  # fmt: skip

    torch.manual_seed(0)
    model = build(5)
    if type_channels != 5:  # the same network with its head cut to the first channels
        state = model.state_dict()
        model = build(type_channels)
        shapes = {k: v.shape for k, v in model.state_dict().items()}
        model.load_state_dict({k: v[: shapes[k][0]] if v.ndim else v for k, v in state.items()})
    folder.mkdir(parents=True, exist_ok=True)
    save_model(folder / "model.safetensors", model.eval())
    post = {
        "method": "watershed",
        "params": TYPED_THRESHOLDS,
        "predict": {"tile": 128},
        "mpp": 0.25,
    }
    (folder / "thresholds.json").write_text(json.dumps(post))
    return folder
