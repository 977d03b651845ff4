"""`nucseg reproduce` on a tiny config: every table and figure file, then a resumed run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nucseg.cli import main
from nucseg.reproduce import METHODS, ReproduceConfig

TINY = Path(__file__).parent / "data" / "reproduce-tiny.json"


def test_config_rejects_unknown_keys_and_methods():
    with pytest.raises(KeyError, match="valid"):
        ReproduceConfig.from_dict({"method": ["otsu"]})
    with pytest.raises(KeyError, match="unknown methods"):
        ReproduceConfig.from_dict({"methods": ["stardist"]})


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
    stage_one = out / "models" / "unet-resnet101"
    for path in sorted(stage_one.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    stage_one.rmdir()
    assert main(["reproduce", str(TINY), "--out", str(out)]) == 0
    assert kept.stat().st_mtime_ns == before
    assert (out / "scores" / "gb-unet_tnbc.json").is_file()
    assert (stage_one / "model.safetensors").is_file()

    (out / "figure3.png").unlink()
    assert main(["reproduce", str(TINY), "--out", str(out), "--report-only"]) == 0
    assert (out / "figure3.png").is_file()  # redrawn from the saved predictions
