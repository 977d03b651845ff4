"""`nucseg reproduce` on a tiny config: every table and figure file, then a resumed run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from nucseg.cli import main
from nucseg.reproduce import METHODS, UNETS, ReproduceConfig, Reproduction
from nucseg.train import TrainConfig, fit

TINY = Path(__file__).parent / "data" / "reproduce-tiny.json"


def test_config_rejects_unknown_keys_and_methods():
    with pytest.raises(KeyError, match="valid"):
        ReproduceConfig.from_dict({"method": ["otsu"]})
    with pytest.raises(KeyError, match="unknown methods"):
        ReproduceConfig.from_dict({"methods": ["stardist"]})
    # A typo inside a block fails at once, not after hours of training the methods before it.
    for block, key in [("unet", "learning_rate"), ("maskrcnn", "backbon"), ("gb_unet", "widht")]:
        with pytest.raises(KeyError, match=f"{block}' block key.*{key}"):
            ReproduceConfig.from_dict({block: {key: 1}})


def test_methods_outside_the_config_are_refused(tmp_path):
    config = ReproduceConfig.from_dict({"methods": ["otsu"], "datasets": ["tnbc"]})
    with pytest.raises(ValueError, match="not in the config's methods"):
        Reproduction(config, tmp_path / "out").run(methods=["otsu", "fiji"])
    assert not (tmp_path / "out").exists()


def test_shipped_configs_are_valid():
    ReproduceConfig.from_dict(json.loads(TINY.read_text()))
    configs = Path(__file__).parents[1] / "configs"
    for path in [configs / "reproduce-cpu.json", configs / "reproduce-gpu.json"]:
        config = ReproduceConfig.from_dict(json.loads(path.read_text()))
        assert config.methods == list(METHODS), path.name  # all 14, in the paper's order
        trained = [*UNETS, "maskrcnn", "gb-unet"]
        assert set(trained) <= set(config.budgets), path.name  # a budget for each


def test_a_killed_unet_resumes_from_its_checkpoint(data_root, tmp_path, caplog):
    values = json.loads(TINY.read_text())
    values["unet"].update(steps=3, checkpoint_every_steps=1)
    run = Reproduction(ReproduceConfig.from_dict(values), tmp_path, tmp_path / "models")
    folder = tmp_path / "models" / "unet-vgg16"
    config = TrainConfig.from_dict(run._unet_config("unet-vgg16"))
    fit(config, folder, stop_after=2, progress=False)  # a session ended here
    assert not (folder / "model.safetensors").exists()
    with caplog.at_level("INFO", logger="nucseg.reproduce"):
        run.train_unet("unet-vgg16")
    assert "resuming" in caplog.text
    assert (folder / "history.csv").read_text().count("\n") == 4  # header + 3 steps, not 5
    assert json.loads((folder / "trained.json").read_text())["train_seconds"] > 0

    # A checkpoint of another config is not resumed: the network is trained from the start.
    other = tmp_path / "models" / "unet-vgg19"
    fit(TrainConfig.from_dict({**run._unet_config("unet-vgg19"), "lr": 1.0}), other,
        stop_after=1, progress=False)  # fmt: skip
    caplog.clear()
    with caplog.at_level("INFO", logger="nucseg.reproduce"):
        run.train_unet("unet-vgg19")
    assert "another config" in caplog.text and "resuming" not in caplog.text
    assert json.loads((other / "config.json").read_text())["lr"] != 1.0


@pytest.mark.slow
def test_tiny_reproduction_writes_every_table_and_figure_and_resumes(data_root, tmp_path):
    out = tmp_path / "paper"
    assert main(["reproduce", str(TINY), "--out", str(out)]) == 0
    files = ["table2a.md", "table2a.csv", "table2b.md", "table2b.csv", "table3.md", "table3.csv",
             "figure2.png", "figure2.svg", "figure3.png", "config.json"]  # fmt: skip
    for name in files:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for method in METHODS:
        for dataset in ("monuseg-breast", "tnbc"):
            record = json.loads((out / "scores" / f"{method}_{dataset}.json").read_text())
            assert record["n_images"] == 1 and 0.0 <= record["aji"] <= 1.0
            assert "train_seconds" in record and record["hardware"]
    table = (out / "table2a.md").read_text()
    assert "GB U-Net" in table and "(0.5331)" in table  # the paper's value beside ours
    assert "coco_map" in json.loads((out / "scores" / "maskrcnn_tnbc.json").read_text())

    # Resume: finished methods are skipped; a lost stage-one network is retrained when needed.
    kept = out / "scores" / "unet-vgg16_tnbc.json"
    before = kept.stat().st_mtime_ns
    (out / "scores" / "gb-unet_tnbc.json").unlink()
    (out / "scores" / "otsu_tnbc.json").unlink()
    stage_one = out / "models" / "unet-resnet101"
    for path in sorted(stage_one.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    stage_one.rmdir()
    # --methods runs only the methods it names
    assert main(["reproduce", str(TINY), "--out", str(out), "--methods", "gb-unet"]) == 0
    assert kept.stat().st_mtime_ns == before
    assert (out / "scores" / "gb-unet_tnbc.json").is_file()
    assert not (out / "scores" / "otsu_tnbc.json").exists()
    assert (stage_one / "model.safetensors").is_file()
    # without --methods, the missing score is made and every finished method skipped
    assert main(["reproduce", str(TINY), "--out", str(out)]) == 0
    assert (out / "scores" / "otsu_tnbc.json").is_file()
    assert kept.stat().st_mtime_ns == before

    # Figure 3 is redrawn from out/predictions even after the models folder is gone.
    kept_predictions = sorted((out / "predictions").rglob("*.npz"))
    assert sorted(p.parent.name for p in kept_predictions) == sorted(METHODS)  # limit_eval: 1
    shutil.rmtree(out / "models")
    (out / "figure3.png").unlink()
    assert main(["reproduce", str(TINY), "--out", str(out), "--report-only"]) == 0
    assert (out / "figure3.png").is_file()  # redrawn from the saved predictions


def test_a_rescored_methods_kept_figure3_labels_are_replaced(tmp_path):
    from nucseg.reproduce_report import _keep_figure3_images

    def record(ajis):
        return {"per_image": {image_id: {"aji": aji} for image_id, aji in ajis.items()}}

    models, out = tmp_path / "models", tmp_path / "out"
    (models / "maskrcnn").mkdir(parents=True)
    for image_id in "abc":
        np.savez(models / "maskrcnn" / f"{image_id}.npz", labels=np.full((2, 2), ord(image_id)))
    first = {("maskrcnn", "monuseg-breast"): record({"a": 0.1, "b": 0.5, "c": 0.3})}
    _keep_figure3_images(out, first, models)
    assert sorted(p.stem for p in (out / "predictions" / "maskrcnn").glob("*.npz")) == ["a", "b"]
    # Rescored: new labels for "b", and "c" is now the lowest: "a" goes, "b" is replaced.
    np.savez(models / "maskrcnn" / "b.npz", labels=np.zeros((2, 2)))
    second = {("maskrcnn", "monuseg-breast"): record({"a": 0.4, "b": 0.5, "c": 0.2})}
    _keep_figure3_images(out, second, models)
    kept = out / "predictions" / "maskrcnn"
    assert sorted(p.stem for p in kept.glob("*.npz")) == ["b", "c"]
    assert not np.load(kept / "b.npz")["labels"].any()
    # Without the models folder, the kept labels stay as they are.
    shutil.rmtree(models)
    _keep_figure3_images(out, second, models)
    assert sorted(p.stem for p in kept.glob("*.npz")) == ["b", "c"]
