"""The network backends (nucseg.backends): one contract, export of every registered network, the
OpenVINO cache, "auto", and agreement with torch on the MoNuSeg breast test images."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from test_models import side, slow_unless_fast

from nucseg import backends
from nucseg.backends import common, openvino_runtime
from nucseg.backends.torch_runtime import TorchBackend, forward_tta
from nucseg.cli import main
from nucseg.models import create_model, list_models, save_model
from nucseg.models.export import PixelModel, export_onnx, read_metadata

SLIM = (32, 16, 16, 8, 8)
needs_openvino = pytest.mark.skipif(not openvino_runtime.available(), reason="no openvino")


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return create_model("unet-resnet18", num_classes=3, distance_channels=2,
                        decoder_channels=SLIM).eval()  # fmt: skip


def tiles(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_numpy_tta_undoes_every_transform_as_torch_does():
    x = tiles(2, 32).astype(np.float32)
    for tta in common.TTA_MODES:
        np.testing.assert_array_equal(common.tta_numpy(lambda t: t, x, tta), x)
    # a forward pass that is not equivariant: both TTAs must average the same transformed outputs
    weight = np.arange(32, dtype=np.float32)[None, :, None, None]
    got = common.tta_numpy(lambda t: t * weight, x, "d4")
    ref = forward_tta(lambda t: t * torch.from_numpy(weight[0, :, :, 0]).view(1, 1, 32, 1),
                      torch.from_numpy(x).permute(0, 3, 1, 2), tta="d4")  # fmt: skip
    np.testing.assert_allclose(got, ref.permute(0, 2, 3, 1).numpy(), rtol=1e-6)


def test_softmax_touches_only_the_class_channels():
    logits = np.random.default_rng(1).normal(size=(2, 8, 8, 6)).astype(np.float32)
    maps = common.softmax_classes(logits.copy(), 3)
    np.testing.assert_allclose(maps[..., :3].sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(maps[..., 3:], logits[..., 3:])
    assert (np.argmax(maps[..., :3], -1) == np.argmax(logits[..., :3], -1)).all()


def test_unknown_backend_lists_the_valid_ones(tiny):
    with pytest.raises(ValueError, match="auto, torch, openvino"):
        backends.make_backend(tiny, "onnx", num_classes=3, device=torch.device("cpu"))


@needs_openvino
@pytest.mark.parametrize("name", slow_unless_fast(list_models()))
def test_every_registered_network_exports_and_runs_in_openvino(tmp_path, name):
    import openvino as ov

    model = create_model(name, num_classes=3, distance_channels=1).eval()
    size = side(name)
    path = export_onnx(model, tmp_path / "m.onnx", num_classes=3, size=size)
    meta = read_metadata(path)
    assert json.loads(meta["num_classes"]) == 3 and json.loads(meta["out_channels"]) == 4
    x = tiles(2, size, seed=2)
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    got = compiled(x)[0]
    with torch.inference_mode():
        ref = PixelModel(model)(torch.from_numpy(x)).numpy()
    assert got.shape == (2, size, size, 4)
    np.testing.assert_allclose(got, ref, atol=1e-3 * max(1.0, np.abs(ref).max()))


@needs_openvino
@pytest.mark.parametrize("tta", ["none", "flips"])  # softmax in the graph; in NumPy after the TTA
def test_openvino_matches_torch_on_any_channel_count(tiny, tta):
    cpu = torch.device("cpu")
    ov_backend = backends.make_backend(tiny, "openvino", num_classes=3, device=cpu,
                                       precision="fp32", tta=tta)  # fmt: skip
    ref = TorchBackend(tiny, num_classes=3, device=cpu, precision="fp32", tta=tta)
    x = tiles(3, 64, seed=3)
    got, want = ov_backend.predict(x), ref.predict(x)
    assert ov_backend.name == "openvino" and got.shape == want.shape == (3, 64, 64, 5)
    np.testing.assert_allclose(got, want, atol=1e-4)
    np.testing.assert_allclose(ov_backend.predict(x, softmax=False)[..., 3:], got[..., 3:])


def test_softmax_of_a_type_head_touches_its_own_channels_too():
    logits = np.random.default_rng(2).normal(size=(2, 8, 8, 9)).astype(np.float32)
    maps = common.softmax_classes(logits.copy(), 3, type_channels=5)
    np.testing.assert_allclose(maps[..., :3].sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(maps[..., 4:].sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(maps[..., 3], logits[..., 3])  # the distance channel
    assert (np.argmax(maps[..., 4:], -1) == np.argmax(logits[..., 4:], -1)).all()


@needs_openvino
@pytest.mark.parametrize("tta", ["none", "flips"])
def test_both_backends_give_type_probabilities_alike(tta):
    # the type head's softmax runs in each backend (in OpenVINO's graph without TTA), so a
    # typed model's maps are the same through either, the types summing to 1 per pixel
    torch.manual_seed(1)
    typed = create_model("unet-resnet18", num_classes=3, distance_channels=1, type_channels=5,
                         decoder_channels=SLIM).eval()  # fmt: skip
    cpu = torch.device("cpu")
    got_backend = backends.make_backend(typed, "openvino", num_classes=3, type_channels=5,
                                        device=cpu, precision="fp32", tta=tta)  # fmt: skip
    ref = backends.make_backend(typed, "torch", num_classes=3, type_channels=5, device=cpu,
                                precision="fp32", tta=tta)  # fmt: skip
    x = tiles(2, 64, seed=4)
    got, want = got_backend.predict(x), ref.predict(x)
    assert got.shape == want.shape == (2, 64, 64, 9)
    np.testing.assert_allclose(got, want, atol=1e-4)
    np.testing.assert_allclose(got[..., 4:].sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(got[..., :3].sum(-1), 1.0, atol=1e-5)
    raw = got_backend.predict(x, softmax=False)
    np.testing.assert_allclose(got[..., 3], raw[..., 3], atol=1e-5)  # distance passed through


@needs_openvino
def test_compiled_model_is_cached_by_weights(tmp_path):
    """Runs :func:`test_the_cache_in_its_own_process` in a process of its own: after it, a
    KeyboardInterrupt raised in this process by a later test crashed the interpreter (exit 139;
    OpenVINO's cache of compiled blobs left in memory), which would stop the whole suite."""
    env = {**os.environ, "NUCSEG_CACHE_TEST": "1", "NUCSEG_CACHE": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         f"{__file__}::test_the_cache_in_its_own_process"],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0 and "1 passed" in done.stdout, done.stdout + done.stderr


@needs_openvino
@pytest.mark.skipif(
    os.environ.get("NUCSEG_CACHE_TEST") != "1",
    reason="run in its own process by test_compiled_model_is_cached_by_weights",
)
def test_the_cache_in_its_own_process(tiny, monkeypatch, tmp_path):
    monkeypatch.setenv("NUCSEG_CACHE", str(tmp_path))
    first = openvino_runtime.OpenVINOBackend(tiny, num_classes=3, weights_sha256="ab" * 32)
    assert first.cache.name.startswith("abababababababab-ov")
    assert (first.cache / "model.onnx").is_file() and any((first.cache / "compiled").iterdir())

    def no_export(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr("nucseg.models.export.export_onnx", no_export)
    blobs = sorted((first.cache / "compiled").iterdir())
    second = openvino_runtime.OpenVINOBackend(tiny, num_classes=3, weights_sha256="ab" * 32)
    assert second.cache == first.cache and sorted((first.cache / "compiled").iterdir()) == blobs
    x = tiles(1, 64)
    np.testing.assert_array_equal(second.predict(x), first.predict(x))
    with pytest.raises(AssertionError, match="exported again"):  # other weights: a new entry
        openvino_runtime.OpenVINOBackend(tiny, num_classes=3, weights_sha256="cd" * 32)
    # OpenVINO's objects go now, not at a later garbage collection in another test: one left
    # to the collector crashed the process when a later test raised KeyboardInterrupt
    del first, second
    gc.collect()


def test_auto_is_torch_without_openvino_or_when_they_disagree(tiny, monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setenv("NUCSEG_BACKEND", "openvino")  # the environment's meaning of auto
    if openvino_runtime.available():
        assert backends.make_backend(tiny, "auto", num_classes=3, device=cpu).name == "openvino"
    monkeypatch.setenv("NUCSEG_BACKEND", "typo")
    with pytest.raises(ValueError, match="auto, torch, openvino"):
        backends.make_backend(tiny, "auto", num_classes=3, device=cpu)
    monkeypatch.delenv("NUCSEG_BACKEND")
    monkeypatch.setattr(openvino_runtime, "available", lambda: False)
    assert backends.make_backend(tiny, "auto", num_classes=3, device=cpu).name == "torch"
    with pytest.raises(ImportError, match="pip install openvino"):
        backends.make_backend(tiny, "openvino", num_classes=3, device=cpu)
    monkeypatch.undo()
    monkeypatch.delenv("NUCSEG_BACKEND")
    if openvino_runtime.available():
        assert backends.make_backend(tiny, "auto", num_classes=3, device=cpu).name == "openvino"
        monkeypatch.setattr(backends, "AUTO_TOLERANCE", -1.0)
        assert backends.make_backend(tiny, "auto", num_classes=3, device=cpu).name == "torch"


@needs_openvino
def test_export_command_writes_onnx_and_refuses_to_overwrite(tiny, tmp_path, capsys):
    folder = tmp_path / "model"
    folder.mkdir()
    save_model(folder / "model.safetensors", tiny)
    out = tmp_path / "net.onnx"
    assert main(["export", str(folder), str(out)]) == 0
    meta = read_metadata(out)
    assert meta["model"] == "unet-resnet18" and len(meta["weights_sha256"]) == 64
    assert main(["export", str(folder), str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("nucseg: error:") and "net.onnx" in err[-1]
    assert "--overwrite" in err[-1]
    assert main(["segment", str(out), "--method", "otsu", "--backend", "torch",
                 "--out", str(tmp_path / "o")]) == 2  # fmt: skip
    assert "--backend applies to a model" in capsys.readouterr().err


@needs_openvino
@pytest.mark.slow
@pytest.mark.data
def test_openvino_and_torch_fp32_agree_on_the_breast_test_images(data_root):
    """Label images of OpenVINO fp32 and torch fp32 (nucseg segment's engine, bundled model) on
    the 8 MoNuSeg breast test images: AJI >= 0.99 on each (results/backends/agreement.json)."""
    from nucseg import datasets
    from nucseg.metrics import aji
    from nucseg.pipeline import make_segmenter

    name, split = datasets.resolve_eval_dataset("monuseg-breast")
    ids = datasets.ids(name, split=split)
    assert len(ids) == 8
    segment = {b: make_segmenter(model="default", backend=b, precision="fp32")
               for b in ("torch", "openvino")}  # fmt: skip
    for image_id in ids:
        image = datasets.load_sample(name, image_id).image
        assert aji(segment["torch"](image), segment["openvino"](image)) >= 0.99, image_id
