"""``nucseg reproduce CONFIG``: every method of the paper's Table 2, trained and scored, resumably.

One run folder (``--out``) receives, for each method as soon as it is done,
``scores/<method>_<dataset>.json`` (the keys of ``nucseg evaluate --json`` plus the training
time and hardware), and after each method the tables and figures are rewritten from every score
file present:

- ``table2a.{md,csv}`` (MoNuSeg breast) and ``table2b.{md,csv}`` (TNBC): the paper's columns, our
  value with the paper's beside it, training time and hardware;
- ``table3.{md,csv}``: per-image AJI on the 8 MoNuSeg breast images, every method;
- ``figure2.{png,svg}``: precision (the paper's per-threshold "AP") against the ten IoU thresholds,
  one line per method, one panel per test set;
- ``figure3.png``: the lowest- and highest-AJI MoNuSeg breast images of the best method, true
  positive pixels green, false negative red, false positive blue.

Trained networks go to ``--models`` (default ``<out>/models``; keep it out of git). A method whose
score files all exist is skipped, so an interrupted run resumes where it stopped (a U-Net or
Mask R-CNN killed mid-training continues from its last checkpoint), and the run can be spread over
several sittings. The ensemble and GB U-Net need three stage-one U-Nets: one whose weights are
present is reused, one whose weights are gone is retrained with its recipe.

This module runs the methods and writes their score files; :mod:`nucseg.reproduce_report` writes
the tables and figures (:func:`write_report`, re-exported here).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import platform
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from nucseg._checks import check_keys, dataclass_from_dict
from nucseg.io import atomic_write
from nucseg.reproduce_report import CLASSICAL, DATASET_TABLES, METHODS, write_report

log = logging.getLogger(__name__)

__all__ = ["CLASSICAL", "DATASET_TABLES", "METHODS", "UNETS", "ReproduceConfig", "Reproduction",
           "hardware", "write_report"]  # fmt: skip

UNETS = tuple(m for m in METHODS if m.startswith("unet-") and m != "unet-ensemble")


@dataclasses.dataclass
class ReproduceConfig:
    """What to run (see ``configs/reproduce-cpu.json``).

    ``unet`` holds the :class:`nucseg.train.TrainConfig` fields shared by the eight U-Nets (the
    paper's recipe: 2 classes, Adam 1e-4, paper post-processing); ``budgets`` the training
    seconds per method (U-Nets, ``maskrcnn``, ``gb-unet``); ``maskrcnn`` and ``gb_unet`` the
    fields of :class:`nucseg.maskrcnn.MaskRCNNConfig` and :class:`nucseg.stacking.GBConfig`;
    ``stage_one`` the three U-Nets of the ensemble and GB U-Net; ``limit_eval`` evaluates only
    the first images of each test set and ``crop_eval`` only their top-left square of that side
    (both for quick checks).
    """

    methods: list[str] = dataclasses.field(default_factory=lambda: list(METHODS))
    datasets: list[str] = dataclasses.field(default_factory=lambda: list(DATASET_TABLES))
    unet: dict[str, Any] = dataclasses.field(default_factory=dict)
    unet_models: dict[str, str] = dataclasses.field(default_factory=dict)
    budgets: dict[str, float] = dataclasses.field(default_factory=dict)
    maskrcnn: dict[str, Any] = dataclasses.field(default_factory=dict)
    gb_unet: dict[str, Any] = dataclasses.field(default_factory=dict)
    stage_one: list[str] = dataclasses.field(
        default_factory=lambda: ["unet-vgg19", "unet-resnet101", "unet-densenet121"]
    )
    limit_eval: int | None = None
    crop_eval: int | None = None

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ReproduceConfig:
        """Build from a dict (a JSON config); unknown keys, methods, block keys: ``KeyError``.

        The ``unet``, ``maskrcnn`` and ``gb_unet`` blocks are checked against the fields of
        :class:`~nucseg.train.TrainConfig`, :class:`~nucseg.maskrcnn.MaskRCNNConfig` and
        :class:`~nucseg.stacking.GBConfig` here, so a typo fails before hours of training.
        """
        from nucseg.maskrcnn import MaskRCNNConfig
        from nucseg.stacking import GBConfig
        from nucseg.train import TrainConfig

        config = dataclass_from_dict(cls, values, what="reproduce config")
        bad = sorted(set(config.methods) - set(METHODS))
        if bad:
            raise KeyError(f"unknown methods {bad}; valid: {list(METHODS)}")
        blocks = {"unet": TrainConfig, "maskrcnn": MaskRCNNConfig, "gb_unet": GBConfig}
        for block, target in blocks.items():
            check_keys(getattr(config, block), target, what=f"reproduce config {block!r} block")
        return config


def hardware() -> str:
    """The machine that trains: the GPU's name, else the CPU's model and core count."""
    import os

    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores"


def _checkpoint_elapsed(folder: Path, config: Any) -> float | None:
    """Seconds of training in the checkpoint of ``folder`` if it holds ``config``, else ``None``.

    Only the JSON record is read (:mod:`nucseg.training.checkpoint`): nothing is unpickled.
    """
    from nucseg.training import checkpoint

    if not checkpoint.exists(folder):
        if (folder / checkpoint.LEGACY).is_file():
            log.warning("%s is an old pickle checkpoint, not read; training from the start",
                        folder / checkpoint.LEGACY)  # fmt: skip
        return None
    try:
        record = checkpoint.check_config(folder, config)
    except ValueError as error:  # another config, or a damaged record
        log.warning("%s; training from the start", error)
        return None
    return float(record["extra"]["state"]["elapsed"])


class Reproduction:
    """One reproduction run: ``Reproduction(config, out, models).run()``."""

    def __init__(
        self,
        config: ReproduceConfig,
        out: str | Path,
        models: str | Path | None = None,
        *,
        allow_code_change: bool = False,
    ) -> None:
        from nucseg.provenance import provenance

        self.config = config
        self.out = Path(out)
        self.models = Path(models) if models is not None else self.out / "models"
        self.scores = self.out / "scores"
        self.allow_code_change = allow_code_change
        self.origin = provenance()  # once, at the start: edits made while it runs do not count

    # -- training --
    def _unet_config(self, name: str) -> dict[str, Any]:
        values = {"num_classes": 2, "lr": 1e-4, "encoder_weights": None, "tta": "none",
                  "predict_tile": 256, "predict_overlap": 0.5, **self.config.unet,
                  "model": self.config.unet_models.get(name, name)}  # fmt: skip
        if name in self.config.budgets:
            values.update(time_budget_s=self.config.budgets[name], steps=None)
        return values

    def _trained(self, folder: Path, marker: str) -> bool:
        return (folder / marker).is_file() and (folder / "trained.json").is_file()

    def _mark(self, folder: Path, seconds: float) -> None:
        record = {"train_seconds": round(seconds, 1), "hardware": hardware()}
        _atomic_text(folder / "trained.json", json.dumps(record) + "\n")

    def train_unet(self, name: str) -> Path:
        """The run folder of U-Net ``name``, trained now unless its weights are there.

        A run killed mid-training (a session that ended) resumes from its last checkpoint if
        that was written with the same config; otherwise the folder is cleared and the network
        trained from the start. The recorded training time adds the checkpoint's elapsed time.
        """
        from nucseg.train import TrainConfig, fit

        folder = self.models / name
        if self._trained(folder, "model.safetensors"):
            return folder
        config = TrainConfig.from_dict(self._unet_config(name))
        self._train_resumably(folder, config, lambda resume: fit(config, folder, resume=resume))
        return folder

    def _train_resumably(self, folder: Path, config: Any, train: Callable[[bool], Any]) -> None:
        """``train(resume)`` into ``folder``: resume if its checkpoint holds ``config``, else
        clear the folder and start; record the training time (with the checkpoint's)."""
        start = time.monotonic()
        before = _checkpoint_elapsed(folder, config)
        if before is None:
            if folder.exists():
                shutil.rmtree(folder)
            train(False)
            before = 0.0
        else:
            log.info("resuming %s (%.0f s trained)", folder, before)
            train(True)
        self._mark(folder, before + time.monotonic() - start)

    def _segmenter(self, method: str) -> tuple[Any, Path | None]:
        from nucseg.pipeline import make_segmenter

        if method in CLASSICAL:
            return make_segmenter(method), None
        if method in UNETS:
            from nucseg.infer import Predictor

            folder = self.train_unet(method)
            # the paper's protocol as first scored: whole-image tiling at the model's overlap,
            # batch norms unfolded (folding changes bfloat16 rounding), not the slide engine
            return Predictor.load(folder, fold_bn=False), folder
        if method == "maskrcnn":
            return self._maskrcnn()
        stage_one = [str(self.train_unet(name)) for name in self.config.stage_one]
        if method == "unet-ensemble":
            return self._ensemble(stage_one)
        if method == "gb-unet":
            return self._gb_unet(stage_one)
        raise KeyError(method)

    def _maskrcnn(self) -> tuple[Any, Path]:
        from nucseg.maskrcnn import MaskRCNNConfig, MaskRCNNSegmenter, train_maskrcnn

        folder = self.models / "maskrcnn"
        if not (self._trained(folder, "model.safetensors") or self._trained(folder, "model.pt")):
            values = dict(self.config.maskrcnn)
            if "maskrcnn" in self.config.budgets:
                values.update(time_budget_s=self.config.budgets["maskrcnn"], steps=None)
            config = MaskRCNNConfig.from_dict(values)
            self._train_resumably(
                folder, config, lambda resume: train_maskrcnn(config, folder, resume=resume)
            )
        return MaskRCNNSegmenter.load(folder), folder

    def _ensemble(self, stage_one: list[str]) -> tuple[Any, Path]:
        from nucseg import datasets
        from nucseg.infer import Predictor
        from nucseg.stacking import EnsembleSegmenter
        from nucseg.train import TrainConfig, split_ids

        folder = self.models / "unet-ensemble"
        ensemble = EnsembleSegmenter([Predictor.load(f) for f in stage_one])
        if self._trained(folder, "thresholds.json"):
            ensemble.params = json.loads((folder / "thresholds.json").read_text())["params"]
            return ensemble, folder
        folder.mkdir(parents=True, exist_ok=True)
        start = time.monotonic()
        train_config = TrainConfig.from_dict(json.loads((Path(stage_one[0]) / "config.json")
                                                        .read_text()))  # fmt: skip
        _, val_ids = split_ids(train_config)
        val = [(i, s.image, s.labels) for i in sorted(val_ids)
               for s in [datasets.load_sample(train_config.dataset, i)]]  # fmt: skip
        record = ensemble.tune(val)
        _atomic_text(folder / "thresholds.json", json.dumps(record, indent=1) + "\n")
        seconds = sum(json.loads((Path(f) / "trained.json").read_text())["train_seconds"]
                      for f in stage_one)  # fmt: skip
        self._mark(folder, seconds + time.monotonic() - start)
        return ensemble, folder

    def _gb_unet(self, stage_one: list[str]) -> tuple[Any, Path]:
        from nucseg.stacking import GBConfig, GBUNetSegmenter, train_gb_unet

        folder = self.models / "gb-unet"
        config = json.loads((folder / "config.json").read_text()) if folder.exists() else {}
        if not self._trained(folder, "model.safetensors") or config.get("stage_one") != stage_one:
            values = {**self.config.gb_unet, "stage_one": stage_one}
            if "gb-unet" in self.config.budgets:
                values.update(time_budget_s=self.config.budgets["gb-unet"], steps=None)
            start = time.monotonic()
            train_gb_unet(GBConfig.from_dict(values), folder)
            stage = sum(json.loads((Path(f) / "trained.json").read_text())["train_seconds"]
                        for f in stage_one)  # fmt: skip
            self._mark(folder, stage + time.monotonic() - start)
        return GBUNetSegmenter.load(folder), folder

    # -- evaluation --
    def _score_file(self, method: str, dataset: str) -> Path:
        return self.scores / f"{method}_{dataset}.json"

    def done(self, method: str) -> bool:
        return all(self._score_file(method, d).is_file() for d in self.config.datasets)

    def evaluate(self, method: str) -> None:
        """Train (if needed) and score ``method`` on every test set; writes its score files."""
        from nucseg import datasets
        from nucseg.metrics import coco_map_dataset
        from nucseg.pipeline import evaluate
        from nucseg.provenance import model_sha256

        segmenter, folder = self._segmenter(method)
        models = {} if folder is None else {str(folder): model_sha256(folder)}
        origin = {**self.origin, "models": models}
        trained = {"train_seconds": 0.0, "hardware": hardware()}
        if folder is not None and (folder / "trained.json").is_file():
            trained = json.loads((folder / "trained.json").read_text())
        self.scores.mkdir(parents=True, exist_ok=True)
        for dataset in self.config.datasets:
            name, split = datasets.resolve_eval_dataset(dataset)
            ids = datasets.ids(name, split=split)[: self.config.limit_eval]
            crop = (slice(0, self.config.crop_eval), slice(0, self.config.crop_eval))
            samples = ((s.id, s.image[crop], s.labels[crop])
                       for s in (datasets.load_sample(name, i) for i in ids))  # fmt: skip
            detections = []
            run = segmenter
            if hasattr(segmenter, "predict_instances"):  # Mask R-CNN: keep scores for COCO mAP

                def run(image, _segmenter=segmenter, _detections=detections):
                    labels, scores = _segmenter.predict_instances(image)
                    _detections.append((labels, scores))
                    return labels

            keep = None
            if dataset == "monuseg-breast":  # for figure 3
                folder_out = self.models / "predictions" / method
                folder_out.mkdir(parents=True, exist_ok=True)

                def keep(image_id, image, labels, _folder=folder_out):
                    np.savez_compressed(_folder / f"{image_id}.npz", labels=labels)

            result = evaluate(run, samples, total=len(ids), keep=keep)
            if detections:
                truths = [datasets.load_sample(name, i).labels[crop] for i in ids]
                result["coco_map"] = coco_map_dataset(
                    (t, p, s) for t, (p, s) in zip(truths, detections, strict=True)
                )
            record = {"method": method, "dataset": dataset, **trained, **result,
                      "provenance": origin}  # fmt: skip
            with atomic_write(self._score_file(method, dataset), overwrite=True) as tmp:
                tmp.write_text(json.dumps(record, indent=1) + "\n")
            log.info("%s on %s: AJI %.4f", method, dataset, result["aji"])

    def check_code(self) -> None:
        """Refuse to add scores to a run whose scores came from another commit.

        Raises ``ValueError`` naming the commits unless ``allow_code_change``; scores written
        without a commit (outside a git checkout) are not compared.
        """
        if self.allow_code_change or not self.scores.is_dir():
            return
        now = self.origin.get("commit")
        others = {}
        for path in sorted(self.scores.glob("*.json")):
            commit = json.loads(path.read_text()).get("provenance", {}).get("commit")
            if commit is not None and now is not None and commit != now:
                others.setdefault(commit, path)
        if others:
            commit, path = next(iter(others.items()))
            raise ValueError(
                f"{self.out} holds scores of commit {commit[:10]} (e.g. {path.name}) and this "
                f"is commit {now[:10]}: pass --allow-code-change to add scores of changed code "
                "to it, or choose another --out"
            )

    def run(self, *, methods: list[str] | None = None, progress: bool = True) -> None:
        """Every configured method not done yet, then the tables and figures.

        ``methods``, a subset of the config's, runs only those, in that order: e.g. the ensemble
        and GB U-Net first, while the stage-one networks they share are still on disk.
        """
        order = list(self.config.methods) if methods is None else list(methods)
        unknown = [m for m in order if m not in self.config.methods]
        if unknown:
            raise ValueError(
                f"methods {unknown} are not in the config's methods {list(self.config.methods)}"
            )
        self.check_code()
        self.out.mkdir(parents=True, exist_ok=True)
        with atomic_write(self.out / "config.json", overwrite=True) as tmp:
            tmp.write_text(json.dumps(dataclasses.asdict(self.config), indent=1) + "\n")
        for method in order:
            if self.done(method):
                log.info("%s: scores present, skipped", method)
                continue
            self.evaluate(method)
            write_report(self.out, self.models / "predictions")
        write_report(self.out, self.models / "predictions")


def _atomic_text(path: Path, text: str) -> None:
    with atomic_write(path, overwrite=True) as tmp:
        tmp.write_text(text)
