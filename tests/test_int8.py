"""int8 networks (nucseg.backends.int8, nucseg quantise): where they live, when they are refused,
and a quantised model run end to end (in a process of its own, as OpenVINO's objects are)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nucseg._checks import check_predict_option
from nucseg.backends import int8, make_backend, openvino_runtime
from nucseg.models import create_model, save_model

SLIM = (32, 16, 16, 8, 8)
needs_openvino = pytest.mark.skipif(not openvino_runtime.available(), reason="no openvino")


def tiny_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("unet-resnet18", num_classes=3, decoder_channels=SLIM).eval()


def model_folder(folder: Path) -> Path:
    """A run folder of an untrained tiny network, trained (so its config says) on 3 MoNuSeg
    images with 1 held out."""
    from nucseg.training.config import TrainConfig

    folder.mkdir(parents=True)
    save_model(folder / "model.safetensors", tiny_net())
    config = TrainConfig(model="unet-resnet18", decoder_channels=SLIM, limit_images=3,
                         val_images=1, stain=None, tile=64, steps=1)  # fmt: skip
    (folder / "config.json").write_text(json.dumps(dataclasses.asdict(config)))
    thresholds = {"method": "watershed", "params": {}, "predict": {"tile": 64, "overlap": 0.1}}
    (folder / "thresholds.json").write_text(json.dumps(thresholds))
    return folder


def test_precision_int8_is_a_prediction_option_and_never_runs_on_torch():
    assert check_predict_option("precision", "int8") == "int8"
    with pytest.raises(ValueError, match="int8"):
        check_predict_option("precision", "int4")
    with pytest.raises(ValueError, match="openvino backend, not on torch"):
        make_backend(tiny_net(), "torch", num_classes=3, precision="int8")
    with pytest.raises(ValueError, match="needs a model folder"):
        make_backend(tiny_net(), "openvino", num_classes=3, precision="int8")


def test_an_int8_network_is_refused_unless_its_record_matches_and_passes(tmp_path):
    folder = model_folder(tmp_path / "run")
    assert int8.folder_for(folder) == folder / "int8"
    assert "no int8 network" in int8.problem(folder, "ab" * 32)
    assert not int8.usable(folder, "ab" * 32) and not int8.usable(None, None)
    (folder / "int8").mkdir()
    (folder / "int8" / "model.xml").write_text("<net/>")
    record = {"weights_sha256": "ab" * 32, "passes": True, "validation": {"gap": 0.001}}
    (folder / "int8" / "int8.json").write_text(json.dumps(record))
    assert int8.problem(folder, "ab" * 32) is None
    assert int8.network_path(folder, "ab" * 32) == folder / "int8" / "model.xml"
    assert "quantised from other weights" in int8.problem(folder, "cd" * 32)
    with pytest.raises(ValueError, match="other weights"):
        make_backend(tiny_net(), "openvino", num_classes=3, precision="int8", model_dir=folder,
                     weights_sha256="cd" * 32)  # fmt: skip
    record.update(passes=False, validation={"gap": 0.02})
    (folder / "int8" / "int8.json").write_text(json.dumps(record))
    assert "lost 0.02 validation AJI" in int8.problem(folder, "ab" * 32)


def test_a_bundled_models_int8_network_goes_to_the_cache(monkeypatch, tmp_path):
    from nucseg.pipeline import resolve_model
    from nucseg.provenance import file_sha256

    monkeypatch.setenv("NUCSEG_CACHE", str(tmp_path))
    bundled = resolve_model("default")
    sha = file_sha256(Path(bundled) / "model.safetensors")
    assert int8.folder_for(bundled) == tmp_path / "int8" / sha[:16]
    assert int8.folder_for(bundled, sha) == tmp_path / "int8" / sha[:16]


@needs_openvino
@pytest.mark.data
def test_quantise_a_model_and_segment_with_its_int8_network(data_root, tmp_path):
    """Runs :func:`test_int8_end_to_end_in_its_own_process` in a process of its own."""
    env = {**os.environ, "NUCSEG_INT8_TEST": str(tmp_path), "NUCSEG_CACHE": str(tmp_path / "c")}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         f"{__file__}::test_int8_end_to_end_in_its_own_process"],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0 and "1 passed" in done.stdout, done.stdout + done.stderr


@needs_openvino
@pytest.mark.skipif(
    not os.environ.get("NUCSEG_INT8_TEST"),
    reason="run in its own process by test_quantise_a_model_and_segment_with_its_int8_network",
)
def test_int8_end_to_end_in_its_own_process(capsys, monkeypatch):
    pytest.importorskip("nncf")
    import gc

    from nucseg import datasets
    from nucseg.backends import common
    from nucseg.cli import main
    from nucseg.infer import Predictor
    from nucseg.quantise import quantise_model

    folder = model_folder(Path(os.environ["NUCSEG_INT8_TEST"]) / "run")
    (folder / "SHA256SUMS").write_text("")
    assert main(["quantise", str(folder), "--tiles", "8"]) == 0
    assert "validation AJI fp32" in capsys.readouterr().out
    record = json.loads((folder / "int8" / "int8.json").read_text())
    assert record["calibration"]["tiles"] == 8 and record["calibration"]["per_source"] == {
        "monuseg": 8
    }
    val = record["validation"]
    assert val["fp32"]["sources"]["monuseg"]["images"] == 1
    assert record["passes"] == (val["gap"] <= int8.TOLERANCE)
    assert "int8/model.bin" in (folder / "SHA256SUMS").read_text()  # the manifest lists it
    with pytest.raises(FileExistsError, match="--overwrite"):
        quantise_model(folder, tiles=8)

    record["passes"] = True  # (an untrained network: whatever its gap, run it here)
    (folder / "int8" / "int8.json").write_text(json.dumps(record))
    image = datasets.load_sample("monuseg", datasets.ids("monuseg", split="train")[0]).image
    image = image[:200, :200]
    forced = Predictor.load(folder, precision="int8")
    labels = forced(image)
    assert forced.runtime == {"backend": "openvino", "precision": "int8"}
    assert labels.shape == image.shape[:2] and labels.dtype == np.int32
    maps = forced.predict_maps(image)
    np.testing.assert_allclose(maps[..., :3].sum(-1), 1.0, atol=1e-4)  # probabilities
    monkeypatch.setattr(common, "cpu_has_bf16", lambda: False)
    monkeypatch.setattr("nucseg.backends.cpu_has_bf16", lambda: False)
    monkeypatch.setenv("NUCSEG_BACKEND", "auto")
    chosen = Predictor.load(folder)  # auto on a CPU without bf16: the int8 network
    assert chosen.runtime == {"backend": "openvino", "precision": "int8"}
    np.testing.assert_array_equal(chosen(image), labels)
    monkeypatch.setattr("nucseg.backends.cpu_has_bf16", lambda: True)
    assert Predictor.load(folder).runtime["precision"] != "int8"  # with bf16: bf16
    del forced, chosen
    gc.collect()
