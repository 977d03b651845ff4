"""Tests of nucseg.augment: alignment, label invariants, dtypes, determinism, per-op control."""

from __future__ import annotations

import json
import pickle
import random
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
from scipy import ndimage as ndi

from nucseg.augment import COLOUR_OPS, GEOMETRIC_OPS, AugmentConfig, Augmenter, hed_jitter

ALL_OPS = GEOMETRIC_OPS + COLOUR_OPS
OFF = AugmentConfig().only()


def random_discs(rng: np.random.Generator, shape=(128, 128), n=25) -> np.ndarray:
    """``n`` discs of radius 5-14 px with sparse, large, shuffled label values."""
    labels = np.zeros(shape, dtype=np.int32)
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    values = rng.choice(np.arange(1, 10**6), size=n, replace=False) * 997  # up to ~1e9
    for value in values:
        r0, c0, radius = rng.integers(0, shape[0]), rng.integers(0, shape[1]), rng.uniform(5, 14)
        labels[(rows - r0) ** 2 + (cols - c0) ** 2 <= radius**2] = value
    return labels


def colour_coded(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[int, np.ndarray]]:
    """An image and a weight map whose values encode the label, and the label -> colour table."""
    rng = np.random.default_rng(123)
    values = np.unique(labels)
    colours = rng.integers(0, 256, size=(len(values), 3), dtype=np.uint8)
    index = np.searchsorted(values, labels)
    weights = (1.0 + np.arange(len(values), dtype=np.float32))[index]
    return colours[index], weights, dict(zip(values.tolist(), colours, strict=True))


@pytest.fixture(scope="module")
def sample():
    labels = random_discs(np.random.default_rng(0))
    image, weights, table = colour_coded(labels)
    return image, labels, weights, table


def interior(labels: np.ndarray, margin: int = 2) -> np.ndarray:
    """Pixels whose (2 margin + 1)^2 neighbourhood has a single label, away from the tile edge."""
    size = 2 * margin + 1
    same = ndi.maximum_filter(labels, size) == ndi.minimum_filter(labels, size)
    same[:margin], same[-margin:], same[:, :margin], same[:, -margin:] = False, False, False, False
    return same


@pytest.mark.parametrize("ops", [(op,) for op in GEOMETRIC_OPS] + [GEOMETRIC_OPS])
def test_geometric_ops_keep_image_labels_and_maps_aligned(sample, ops):
    """Image and weight map values encode the label: they must still match it after warping.

    One warp matches exactly away from label borders. Chained warps resample the image several
    times, and a later warp that stretches locally widens the blended border band of an earlier
    one, while labels stay sharp: there a wider margin and a high fraction must match.
    """
    image, labels, weights, table = sample
    w_table = {v: weights[labels == v][0] for v in np.unique(labels).tolist()}
    aug = Augmenter(AugmentConfig().only(*ops), seed=1)
    margin, required = (2, 0.999) if len(ops) == 1 else (3, 0.99)
    changed = 0
    for _ in range(4):
        out = aug(image, labels, weights, extra={"code": np.stack([weights, -weights], axis=2)})
        inside = interior(out["labels"], margin)
        assert inside.mean() > 0.3  # enough pixels to test
        values = out["labels"][inside].tolist()
        expected = np.stack([table[v] for v in values])
        colour_error = np.abs(out["image"][inside].astype(int) - expected).max(axis=1)
        assert np.mean(colour_error <= 1) > required
        weight_error = np.abs(out["weight_map"][inside] - np.array([w_table[v] for v in values]))
        assert np.mean(weight_error < 0.5) > required  # codes of different labels differ by >= 1
        np.testing.assert_array_equal(out["extra"]["code"][..., 0], out["weight_map"])
        np.testing.assert_array_equal(out["extra"]["code"][..., 1], -out["weight_map"])
        changed += not np.array_equal(out["labels"], labels)
    assert changed >= 2


def test_labels_stay_a_subset_of_the_input_labels_over_many_seeds(sample):
    image, labels, weights, _ = sample
    config = replace(AugmentConfig(), p_elastic=0.5)
    allowed = set(np.unique(labels).tolist())
    for seed in range(60):
        out = Augmenter(config, seed=seed)(image, labels, weights)
        assert set(np.unique(out["labels"]).tolist()) <= allowed
        assert np.isfinite(out["weight_map"]).all() and out["weight_map"].min() >= 0


@pytest.mark.parametrize("shape", [(128, 128), (96, 160), (160, 96), (17, 31)])
def test_shapes_and_dtypes_are_preserved(shape):
    rng = np.random.default_rng(0)
    labels = random_discs(rng, shape=shape, n=5).astype(np.uint32)  # any integer dtype in
    image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    weights = rng.uniform(0, 10, shape)  # float64 in
    extra = {
        "dist": rng.uniform(0, 1, shape).astype(np.float32),
        "hv": rng.normal(size=(*shape, 2)),
    }
    out = Augmenter(replace(AugmentConfig(), p_elastic=1.0), seed=0)(image, labels, weights, extra)
    assert out["image"].shape == (*shape, 3) and out["image"].dtype == np.uint8
    assert out["labels"].shape == shape and out["labels"].dtype == np.int32
    assert out["weight_map"].shape == shape and out["weight_map"].dtype == np.float32
    assert out["extra"]["dist"].shape == shape and out["extra"]["hv"].shape == (*shape, 2)
    assert all(a.dtype == np.float32 for a in out["extra"].values())
    assert all(a.flags.c_contiguous for a in (out["image"], out["labels"], out["weight_map"]))


def test_without_weight_map_or_extra_maps():
    labels = random_discs(np.random.default_rng(3), n=5)
    out = Augmenter(seed=0)(np.zeros((128, 128, 3), np.uint8), labels)
    assert out["weight_map"] is None and out["extra"] == {}


def test_same_seed_same_output_different_seed_different_output(sample):
    image, labels, weights, _ = sample

    def run(seed, *, global_seed):
        np.random.seed(global_seed)  # noqa: NPY002 -- proves that the global state is not used
        random.seed(global_seed)
        aug = Augmenter(seed=seed)
        return [aug(image, labels, weights) for _ in range(3)]

    first, again, other = run(7, global_seed=1), run(7, global_seed=2), run(8, global_seed=1)
    for a, b, c in zip(first, again, other, strict=True):
        for key in ("image", "labels", "weight_map"):
            np.testing.assert_array_equal(a[key], b[key])
        assert not np.array_equal(a["image"], c["image"])
    assert not np.array_equal(first[0]["image"], first[1]["image"])  # calls differ


def test_rng_per_call_makes_each_sample_reproducible(sample):
    image, labels, _, _ = sample
    aug = Augmenter(seed=0)
    a = aug(image, labels, rng=42)
    aug(image, labels)  # advances the instance's generator only
    b = aug(image, labels, rng=np.random.default_rng(42))
    c = Augmenter(seed=99)(image, labels, rng=42)
    for key in ("image", "labels"):
        np.testing.assert_array_equal(a[key], b[key])
        np.testing.assert_array_equal(a[key], c[key])
    assert not np.array_equal(a["image"], aug(image, labels, rng=43)["image"])


def test_pickled_augmenter_continues_identically(sample):
    """Worker processes started by spawn receive a pickled copy of the augmenter."""
    image, labels, weights, _ = sample
    aug = Augmenter(seed=4)
    aug(image, labels)
    copy = pickle.loads(pickle.dumps(aug))
    a, b = aug(image, labels, weights), copy(image, labels, weights)
    for key in ("image", "labels", "weight_map"):
        np.testing.assert_array_equal(a[key], b[key])


def test_generator_argument_is_used():
    labels = random_discs(np.random.default_rng(3), n=5)
    image = colour_coded(labels)[0]
    a = Augmenter(rng=np.random.default_rng(5))(image, labels)
    b = Augmenter(seed=5)(image, labels)
    np.testing.assert_array_equal(a["image"], b["image"])
    with pytest.raises(ValueError, match="not both"):
        Augmenter(seed=1, rng=np.random.default_rng(1))


def test_colour_ops_change_only_the_image(sample):
    image, labels, weights, _ = sample
    aug = Augmenter(AugmentConfig().only(*COLOUR_OPS), seed=0)
    for _ in range(5):
        out = aug(image, labels, weights, extra={"w": weights})
        np.testing.assert_array_equal(out["labels"], labels)
        np.testing.assert_array_equal(out["weight_map"], weights)
        np.testing.assert_array_equal(out["extra"]["w"], weights)
        assert not np.array_equal(out["image"], image)


def test_all_probabilities_zero_is_the_identity_and_returns_new_arrays(sample):
    image, labels, weights, _ = sample
    extra = {"hv": np.stack([weights, weights], axis=2)}
    copies = [a.copy() for a in (image, labels, weights, extra["hv"])]
    for seed in range(3):
        out = Augmenter(OFF, seed=seed)(image, labels, weights, extra)
        results = (out["image"], out["labels"], out["weight_map"], out["extra"]["hv"])
        originals = (image, labels, weights, extra["hv"])
        for result, original, copy in zip(results, originals, copies, strict=True):
            np.testing.assert_array_equal(result, copy)
            assert not np.shares_memory(result, original)
    for original, copy in zip((image, labels, weights, extra["hv"]), copies, strict=True):
        np.testing.assert_array_equal(original, copy)  # inputs untouched


@pytest.mark.parametrize("op", ALL_OPS)
def test_each_op_is_switched_by_its_probability(sample, op):
    image, labels, weights, _ = sample
    on = Augmenter(AugmentConfig().only(op), seed=0)
    outputs = [on(image, labels, weights) for _ in range(3)]
    assert any(not np.array_equal(out["image"], image) for out in outputs)
    off = Augmenter(replace(AugmentConfig().only(op), **{f"p_{op}": 0.0}), seed=0)
    out = off(image, labels, weights)
    np.testing.assert_array_equal(out["image"], image)
    np.testing.assert_array_equal(out["labels"], labels)


@pytest.mark.parametrize("op", ALL_OPS)
def test_default_config_without_an_op_never_runs_it(sample, op, monkeypatch):
    """With ``p_<op> = 0`` in an otherwise default config, the op's transform never applies."""
    image, labels, _, _ = sample
    aug = Augmenter(replace(AugmentConfig(), **{f"p_{op}": 0.0}), seed=0)
    functions = {"hed": "hed_jitter", "stain": "restain", "downscale": "downscale", "jpeg": "jpeg"}
    if op in functions:  # applied by nucseg's own functions, outside albumentations
        import nucseg.augment as module

        def fail(*args, **kwargs):
            raise AssertionError(f"{functions[op]} called with p_{op} = 0")

        monkeypatch.setattr(module, functions[op], fail)
    elif op in GEOMETRIC_OPS:
        assert aug._geometric[True].transforms[GEOMETRIC_OPS.index(op)].p == 0.0
    else:
        albumentations_ops = [o for o in COLOUR_OPS if o not in functions]
        assert aug._colour.transforms[albumentations_ops.index(op)].p == 0.0
    for _ in range(5):
        aug(image, labels)


def test_paper_config_is_geometric_only(sample):
    image, labels, _, table = sample
    config = AugmentConfig.paper()
    assert all(getattr(config, f"p_{op}") == 0 for op in COLOUR_OPS)
    assert config.p_elastic == 0 and config.scale_range == (1.0, 1.0)
    out = Augmenter(config, seed=0)(image, labels)
    inside = interior(out["labels"], 3)
    expected = np.stack([table[v] for v in out["labels"][inside].tolist()])
    assert np.mean(np.abs(out["image"][inside].astype(int) - expected).max(axis=1) <= 1) > 0.995


def test_config_validation_and_json_round_trip():
    with pytest.raises(ValueError, match="p_blur"):
        AugmentConfig(p_blur=1.5)
    with pytest.raises(ValueError, match="scale_range"):
        AugmentConfig(scale_range=(1.1, 1.3))
    with pytest.raises(ValueError, match="rotate_limit"):
        AugmentConfig(rotate_limit=270)
    with pytest.raises(KeyError, match="valid names"):
        AugmentConfig().only("rotate90")
    config = replace(AugmentConfig(), p_elastic=0.1, scale_range=(0.9, 1.1))
    rebuilt = AugmentConfig(**json.loads(json.dumps(config.to_dict())))
    assert rebuilt == config and hash(rebuilt) == hash(config)


def test_invalid_inputs_raise_value_error():
    aug = Augmenter(seed=0)
    image, labels = np.zeros((32, 32, 3), np.uint8), np.zeros((32, 32), np.int32)
    with pytest.raises(ValueError, match="uint8"):
        aug(image.astype(np.float32), labels)
    with pytest.raises(ValueError, match="shape"):
        aug(image, labels[:16])
    with pytest.raises(ValueError, match="weight_map"):
        aug(image, labels, np.zeros((32, 32, 2), np.float32))
    with pytest.raises(ValueError, match="extra"):
        aug(image, labels, extra={"d": np.zeros((16, 32), np.float32)})


def test_hed_jitter_identity_and_agreement_with_skimage():
    from skimage.color import hed2rgb, rgb2hed, rgb_from_hed

    rng = np.random.default_rng(0)
    # An H&E-like image: non-negative haematoxylin and eosin (skimage clips negative ones)
    concentrations = rng.uniform(0, 1, (64, 64, 3)) * [1.0, 0.6, 0.0]
    optical_density = concentrations @ (
        rgb_from_hed / np.linalg.norm(rgb_from_hed, axis=1)[:, None]
    )
    image = np.clip(np.rint(256 * np.exp(-optical_density) - 1), 0, 255).astype(np.uint8)
    same = hed_jitter(image, scale=np.ones(3), shift=np.zeros(3))
    np.testing.assert_array_equal(same, image)
    for scale in ([1.3, 0.8, 1.0], [0.7, 1.2, 1.0]):
        reference = np.clip(np.rint(255 * hed2rgb(rgb2hed(image) * scale)), 0, 255)
        ours = hed_jitter(image, scale=np.array(scale), shift=np.zeros(3))
        assert np.abs(ours.astype(int) - reference).mean() < 1.5  # OD conventions differ by +1
    darker = hed_jitter(image, scale=np.ones(3), shift=np.array([0.2, 0.0, 0.0]))
    assert darker.astype(int).sum() < image.astype(int).sum()  # more haematoxylin, darker


def test_importing_augment_does_not_import_torch():
    code = "import sys, nucseg.augment; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_restain_with_the_source_stains_is_the_identity_and_scales_like_hed_jitter():
    rng = np.random.default_rng(0)
    image = rng.integers(30, 250, (16, 16, 3), dtype=np.uint8)
    from nucseg.augment import _RGB_FROM_HED, restain

    np.testing.assert_array_equal(restain(image, stains=_RGB_FROM_HED), image)
    scale = np.array([1.3, 0.7, 1.0])
    np.testing.assert_array_equal(
        restain(image, stains=_RGB_FROM_HED, scale=scale),
        hed_jitter(image, scale=scale, shift=np.zeros(3)),
    )


def test_random_stain_matrix_turns_h_and_e_by_at_most_the_angle():
    from nucseg.augment import _RGB_FROM_HED, random_stain_matrix

    rng = np.random.default_rng(1)
    for _ in range(50):
        stains = random_stain_matrix(rng, max_angle=20.0)
        np.testing.assert_allclose(np.linalg.norm(stains, axis=1), 1.0)
        assert (stains >= 0).all()
        cosines = np.sum(stains[:2] * _RGB_FROM_HED[:2], axis=1)
        assert (np.degrees(np.arccos(np.clip(cosines, -1, 1))) <= 20.0 + 1e-6).all()
        np.testing.assert_array_equal(stains[2], _RGB_FROM_HED[2])


def test_strong_stain_config_changes_colours_but_never_labels(sample):
    image, labels, weights, _ = sample
    aug = Augmenter(AugmentConfig.strong_stain().only("stain", "downscale", "jpeg"), seed=0)
    out = aug(image, labels, weights)
    assert not np.array_equal(out["image"], image)
    np.testing.assert_array_equal(out["labels"], labels)
