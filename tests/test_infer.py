"""Tiled prediction, TTA and loading a model folder for ``nucseg segment --model``."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest
import torch

from nucseg.cli import main
from nucseg.infer import PREDICT_OPTIONS, Predictor, forward_tta, predict_maps, to_tensor
from nucseg.models import create_model, save_model

SLIM = (32, 16, 16, 8, 8)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("unet-resnet18", num_classes=3, decoder_channels=SLIM).eval()


def test_maps_are_probabilities_of_any_image_size(model):
    rng = np.random.default_rng(0)
    for shape in [(100, 70), (256, 256), (300, 530)]:
        image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
        maps = predict_maps(model, image, num_classes=3, tile=64, batch_size=4)
        assert maps.shape == (*shape, 3) and maps.dtype == np.float32
        np.testing.assert_allclose(maps.sum(-1), 1.0, atol=1e-4)


def test_tiling_matches_one_whole_pass_where_tiles_agree(model):
    # With no overlap and tiles the size of the image, tiling is the identity.
    image = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    maps = predict_maps(model, image, num_classes=3, tile=64, precision="fp32")
    with torch.no_grad():
        whole = model(to_tensor(image[None], torch.device("cpu"))).softmax(1)[0]
    np.testing.assert_allclose(maps, whole.permute(1, 2, 0).numpy(), atol=1e-5)


def test_tta_maps_back_to_the_input_frame():
    # A "model" that returns its input: every TTA transform must be undone exactly.
    identity = torch.nn.Identity()
    x = torch.randn(2, 3, 32, 32)
    for tta in ("none", "flips", "d4"):
        torch.testing.assert_close(forward_tta(identity, x, tta=tta), x)
    with pytest.raises(ValueError, match="tta"):
        forward_tta(identity, x, tta="rot")


def test_model_folder_loads_and_segments_from_the_cli(model, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    save_model(folder / "model.safetensors", model, fp16=True)
    params = {"interior_threshold": 0.5, "foreground_threshold": 0.5, "min_size": 5}
    (folder / "thresholds.json").write_text(
        json.dumps({"method": "watershed", "params": params, "predict": {"tta": "flips"}})
    )
    predictor = Predictor.load(folder, batch_size=2)
    assert predictor.options["tta"] == "flips" and predictor.options["batch_size"] == 2
    image = np.random.default_rng(2).integers(0, 256, (96, 80, 3), dtype=np.uint8)
    labels = predictor(image)
    assert labels.shape == (96, 80) and labels.dtype == np.int32

    image_file = tmp_path / "tile.png"
    from nucseg.io import write_png

    write_png(image_file, image)
    out = tmp_path / "out"
    assert main(["segment", str(image_file), "--model", str(folder), "--out", str(out)]) == 0
    assert (out / "tile_labels.tif").is_file()


def test_predictor_options_are_the_documented_ones(model):
    """`nucseg segment` accepts exactly PREDICT_OPTIONS as overrides and passes them through."""
    predictor = Predictor(model, num_classes=3)
    assert tuple(predictor.options) == PREDICT_OPTIONS
    assert set(PREDICT_OPTIONS) <= set(inspect.signature(predict_maps).parameters)


def test_missing_model_folder_is_a_clear_error(tmp_path, capsys):
    assert main(["segment", "x.png", "--model", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "x.png" in capsys.readouterr().err
    from nucseg.pipeline import resolve_model

    with pytest.raises(FileNotFoundError, match="bundled"):
        resolve_model(tmp_path)
