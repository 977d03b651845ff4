"""Training: a tiny model overfits a real crop; a killed, resumed run ends as an unbroken one."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from nucseg.train import TrainConfig, batch_indices, budgeted_steps, fit, learning_rate

TINY = {"model": "unet-resnet18", "decoder_channels": (32, 16, 16, 8, 8), "limit_images": 2,
        "val_images": 0, "stain": None, "tile": 64, "batch_size": 2, "steps": 4,
        "warmup_steps": 1, "checkpoint_every_s": 1e9}  # fmt: skip


def test_batches_are_a_pure_function_of_the_step():
    a = batch_indices(7, n_tiles=10, batch_size=4, seed=3)
    assert np.array_equal(a, batch_indices(7, n_tiles=10, batch_size=4, seed=3))
    epoch0 = np.concatenate([batch_indices(s, n_tiles=12, batch_size=4, seed=0) for s in range(3)])
    assert sorted(epoch0) == list(range(12))  # one epoch visits every tile once


def test_learning_rate_warms_up_then_decays():
    config = TrainConfig(steps=100, warmup_steps=10, lr=1e-3)
    lrs = [learning_rate(s, 100, config) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(b <= a for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert lrs[-1] < 0.05e-3


def test_config_rejects_unknown_keys_and_ambiguous_length():
    with pytest.raises(KeyError, match="valid"):
        TrainConfig.from_dict({"modle": "x"})
    with pytest.raises(ValueError, match="exactly one"):
        TrainConfig(steps=10, time_budget_s=60)


def test_config_turns_json_lists_into_tuples():
    config = TrainConfig.from_dict({**TINY, "decoder_channels": [32, 16, 16, 8, 8]})
    assert config.decoder_channels == (32, 16, 16, 8, 8)


def test_budgeted_steps_stop_at_the_step_count_or_the_time_budget():
    assert [s for s, _, _ in budgeted_steps(3, None, desc="t", progress=False)] == [0, 1, 2]
    assert list(budgeted_steps(None, 0.0, desc="t", progress=False)) == []
    now = [100.0]  # a fake clock: each step takes exactly 0.02 s, whatever the machine's load
    seen = []
    for _, elapsed, _ in budgeted_steps(None, 0.05, desc="t", progress=False, clock=lambda: now[0]):
        seen.append(elapsed)
        now[0] += 0.02
    assert seen == pytest.approx([0.0, 0.02, 0.04])  # the step at 0.06 s is past the budget
    resumed = []  # a resumed run continues the step count and the budget
    for step, elapsed, _ in budgeted_steps(None, 0.05, desc="t", progress=False, start_step=3,
                                           elapsed_before=0.02, clock=lambda: now[0]):  # fmt: skip
        resumed.append((step, elapsed))
        now[0] += 0.02
    assert [s for s, _ in resumed] == [3, 4] and [e for _, e in resumed] == pytest.approx(
        [0.02, 0.04]
    )
    with pytest.raises(ValueError, match="exactly one"):
        next(budgeted_steps(3, 10.0, desc="t"))


def test_tiny_model_overfits_a_real_crop(data_root):
    from nucseg import datasets
    from nucseg.infer import to_tensor
    from nucseg.losses import CombinedLoss, soft_dice
    from nucseg.models import create_model

    torch.manual_seed(0)
    sample = datasets.load_sample("monuseg", "TCGA-21-5784-01Z-00-DX1")
    image, labels = sample.image[:128, :128], sample.labels[:128, :128]
    model = create_model("unet-resnet18", num_classes=2, decoder_channels=(32, 16, 16, 8, 8))
    x = to_tensor(image[None], torch.device("cpu"))
    target = torch.from_numpy((labels > 0).astype(np.int64))[None]
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = CombinedLoss(num_classes=2)
    for _ in range(150):
        loss, _ = loss_fn(model(x), target)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    with torch.no_grad():
        probs = model(x).softmax(1)
    onehot = torch.nn.functional.one_hot(target, 2).permute(0, 3, 1, 2)
    hard = torch.nn.functional.one_hot(probs.argmax(1), 2).permute(0, 3, 1, 2).float()
    assert float(soft_dice(hard, onehot, eps=0.0)) > 0.9


@pytest.mark.slow
def test_killed_and_resumed_run_equals_uninterrupted(data_root, tmp_path):
    config = TrainConfig.from_dict({**TINY, "checkpoint_every_steps": 2})
    fit(config, tmp_path / "full", progress=False)
    fit(config, tmp_path / "resumed", progress=False, stop_after=2)
    assert not (tmp_path / "resumed" / "model.safetensors").exists()  # killed: no final weights
    fit(config, tmp_path / "resumed", progress=False, resume=True)
    threaded = TrainConfig.from_dict({**TINY, "checkpoint_every_steps": 2, "workers": 2})
    fit(threaded, tmp_path / "threaded", progress=False)  # augments in threads, a batch ahead
    full = load_file(tmp_path / "full" / "model.safetensors")
    for other in ("resumed", "threaded"):
        weights = load_file(tmp_path / other / "model.safetensors")
        assert full.keys() == weights.keys()
        for key in full:
            assert torch.equal(full[key], weights[key]), (other, key)
    for name in ("config.json", "history.csv", "loss.png", "thresholds.json"):
        assert (tmp_path / "full" / name).is_file(), name
    history = (tmp_path / "full" / "history.csv").read_text().splitlines()
    assert len(history) == 1 + config.steps
    assert json.loads((tmp_path / "full" / "config.json").read_text())["steps"] == config.steps
    with pytest.raises(FileExistsError, match="--resume or --overwrite"):
        fit(config, tmp_path / "full", progress=False)


def test_distance_targets_follow_the_augmented_tiles(data_root):
    from nucseg.augment import Augmenter
    from nucseg.train import make_batch, prepare_data

    config = TrainConfig.from_dict({**TINY, "distance": True, "num_classes": 3})
    data = prepare_data(config, progress=False)
    assert len(data.distances) == len(data.images)
    indices = batch_indices(0, n_tiles=len(data.tiles), batch_size=4, seed=0)
    for augmenter in (None, Augmenter()):
        images, targets, weights, distances = make_batch(data, indices, 0, config, augmenter)
        assert distances.shape == (4, 1, 64, 64) and distances.dtype == np.float32
        inside, outside = distances[:, 0][targets > 0], distances[:, 0][targets == 0]
        assert inside.mean() > 0.3 and np.percentile(outside, 99) < 0.35  # aligned, not shifted
        assert np.all(distances[:, 0][targets == 1] > 0)  # every interior pixel has a distance


@pytest.mark.slow
def test_distance_model_trains_and_tunes_both_rules(data_root, tmp_path):
    from nucseg.infer import Predictor

    values = {**TINY, "distance": True, "num_classes": 3, "val_images": 1, "limit_images": 3}
    run = fit(TrainConfig.from_dict(values), tmp_path / "run", progress=False)
    record = json.loads((run / "thresholds.json").read_text())
    assert {c["method"] for c in record["compared"]} == {"watershed", "distance"}
    best = max(record["compared"], key=lambda c: c["aji"])
    assert record["method"] == best["method"] and record["params"] == best["params"]
    predictor = Predictor.load(run)
    image = np.random.default_rng(0).integers(0, 256, (70, 90, 3), dtype=np.uint8)
    maps = predictor.predict_maps(image)
    assert maps.shape == (70, 90, 4)  # 3 class probabilities, then the distance
    for method in ("watershed", "distance"):
        predictor.postprocess, predictor.postprocess_params = method, {}
        labels = predictor.maps_to_labels(maps)
        assert labels.shape == (70, 90) and labels.dtype == np.int32


@pytest.mark.slow
def test_moving_average_resumes_and_validation_picks_the_weights(data_root, tmp_path):
    values = {**TINY, "ema_decay": 0.9, "val_images": 1, "limit_images": 3,
              "checkpoint_every_steps": 2}  # fmt: skip
    config = TrainConfig.from_dict(values)
    fit(config, tmp_path / "full", progress=False)
    fit(config, tmp_path / "resumed", progress=False, stop_after=2)
    fit(config, tmp_path / "resumed", progress=False, resume=True)
    full = load_file(tmp_path / "full" / "model.safetensors")
    resumed = load_file(tmp_path / "resumed" / "model.safetensors")
    assert all(torch.equal(full[key], resumed[key]) for key in full)  # the average resumes too
    record = json.loads((tmp_path / "full" / "thresholds.json").read_text())
    scores = {c["weights"]: c["score"] for c in record["compared_weights"]}
    assert scores.keys() == {"trained", "ema"}
    assert record["weights"] == ("ema" if scores["ema"] > scores["trained"] else "trained")
    chosen = [row for row in record["tuning"] if row["params"] == record["params"]]
    assert chosen[0]["aji"] == scores[record["weights"]]
    with pytest.raises(ValueError, match="ema_decay"):
        TrainConfig.from_dict({**TINY, "ema_decay": 1.0})


def test_a_run_without_validation_takes_another_runs_post_processing(data_root, tmp_path):
    from nucseg.infer import Predictor
    from nucseg.train import retune

    run = fit(TrainConfig.from_dict(TINY), tmp_path / "all", progress=False)  # val_images 0
    assert json.loads((run / "thresholds.json").read_text())["params"] == {}  # nothing to tune
    source = tmp_path / "source"
    source.mkdir()
    (source / "config.json").write_text(json.dumps({"num_classes": 3}))
    tuned = {"validation_images": ["a", "b"], "predict": {"tile": 128, "overlap": 0.25,
             "tta": "none"}, "method": "watershed", "params": {"interior_threshold": 0.7,
             "foreground_threshold": 0.6, "min_size": 30}, "tuning": []}  # fmt: skip
    (source / "thresholds.json").write_text(json.dumps(tuned))
    record = retune(run, params_from=source, progress=False)
    assert record == json.loads((run / "thresholds.json").read_text())
    assert record["params_from"] == str(source)
    assert record["source_validation_images"] == ["a", "b"]
    predictor = Predictor.load(run)
    assert predictor.postprocess_params == tuned["params"]
    assert predictor.options["tile"] == 128 and predictor.options["overlap"] == 0.25
    with pytest.raises(ValueError, match="drop tta"):
        retune(run, params_from=source, tta="flips")
    (source / "config.json").write_text(json.dumps({"num_classes": 2}))
    with pytest.raises(ValueError, match="2 classes"):
        retune(run, params_from=source)


def test_init_from_starts_from_the_given_weights_and_records_their_hash(tmp_path, data_root):
    from nucseg.models import load_model

    first = fit(TrainConfig.from_dict(TINY), tmp_path / "a", progress=False)
    config = TrainConfig.from_dict({**TINY, "steps": 1, "lr": 0.0, "fp16_weights": False,
                                    "init_from": str(first)})  # fmt: skip
    second = fit(config, tmp_path / "b", progress=False)
    record = json.loads((second / "init_from.json").read_text())
    weights = (first / "model.safetensors").read_bytes()
    assert record["sha256"] == hashlib.sha256(weights).hexdigest()
    # lr 0: only BatchNorm statistics move, every weight is the starting one
    a, b = load_model(first / "model.safetensors"), load_model(second / "model.safetensors")
    for (name, x), y in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(x, y, msg=name)
    with pytest.raises(ValueError, match="resnet34"):
        other = {**TINY, "model": "unet-resnet34", "decoder_channels": None}
        fit(TrainConfig.from_dict({**other, "init_from": str(first)}), tmp_path / "c")


def test_init_from_refuses_validation_images_the_start_trained_on(tmp_path, data_root):
    from nucseg.train import split_ids
    from nucseg.training.loop import check_init_split

    held = {**TINY, "limit_images": 4, "val_images": 1, "steps": 1}
    first = fit(TrainConfig.from_dict(held), tmp_path / "a", progress=False)
    ours = split_ids(TrainConfig.from_dict(held))[1]
    seed = next(
        s for s in range(1, 50) if split_ids(TrainConfig.from_dict({**held, "seed": s}))[1] != ours
    )
    same = TrainConfig.from_dict({**held, "init_from": str(first)})
    check_init_split(same)  # the same held-out image: fine
    check_init_split(TrainConfig.from_dict({**held, "val_images": 0, "init_from": str(first)}))
    with pytest.raises(ValueError, match=r"trained on 1 of this run's 1 validation images"):
        fit(TrainConfig.from_dict({**held, "seed": seed, "init_from": str(first)}), tmp_path / "b")
    assert not (tmp_path / "b").exists()  # refused before anything is written
    # a start that trained on every image has no held-out image at all
    refit = fit(TrainConfig.from_dict({**held, "val_images": 0}), tmp_path / "c", progress=False)
    with pytest.raises(ValueError, match="seed \\(0\\) and val_images \\(0\\)"):
        check_init_split(TrainConfig.from_dict({**held, "init_from": str(refit)}))


def test_stain_after_augment_normalises_each_augmented_tile(data_root):
    from nucseg.augment import Augmenter
    from nucseg.train import make_batch, prepare_data

    values = {**TINY, "stain": "macenko", "limit_images": 3, "val_images": 1}
    before = prepare_data(TrainConfig.from_dict(values), progress=False)
    config = TrainConfig.from_dict({**values, "stain_after_augment": True})
    data = prepare_data(config, progress=False)
    # the training images stay as scanned; the validation images are normalised whole, as before
    assert not any(np.array_equal(a, b) for a, b in zip(data.images, before.images, strict=True))
    assert len(data.val) == 1
    for (_, a, _), (_, b, _) in zip(data.val, before.val, strict=True):
        assert np.array_equal(a, b)
    indices = batch_indices(0, n_tiles=len(data.tiles), batch_size=4, seed=0)
    images, targets, _, _ = make_batch(data, indices, 0, config, None)
    for k, index in enumerate(indices):
        image_index, slices = data.tiles[index]
        raw = data.images[image_index][slices]
        expected = data.normaliser.apply(raw, data.normaliser.estimate(raw))
        assert np.array_equal(images[k], expected)
        assert np.array_equal(targets[k], data.targets[image_index][slices])
    augmented, _, _, _ = make_batch(data, indices, 0, config, Augmenter())
    assert augmented.shape == images.shape and augmented.dtype == np.uint8
    with pytest.raises(ValueError, match="needs a stain normaliser"):
        TrainConfig.from_dict({**TINY, "stain": None, "stain_after_augment": True})
