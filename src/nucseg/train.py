"""Train a segmentation network: ``fit(config, run_dir)`` -> a run folder.

The run folder holds ``config.json``, ``model.safetensors`` (final weights, fp16 if asked, with the
arguments that rebuild the network), ``normaliser.json`` (stain normaliser fitted on the training
images), ``thresholds.json`` (post-processing tuned on the validation images), ``history.csv``,
``loss.png`` and a checkpoint (``checkpoint.json`` and ``checkpoint-<step>.safetensors``: config,
weights, optimiser, step, RNG state and history, see :mod:`nucseg.training.checkpoint`; a killed
run resumes from it to the same result as an uninterrupted one).

Data: the training images are stain-normalised, cut into tiles (256 x 256 with 10 % overlap, as
the paper), and each step draws a batch of tiles in an order fixed by the seed. Every tile's
augmentation is seeded by ``(seed, step, index)``, so a resumed run sees exactly the same batches.
"""

from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import json
import logging
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from nucseg._checks import check_steps_or_budget, dataclass_from_dict
from nucseg.infer import autocast, default_device, input_stats, to_tensor
from nucseg.io import atomic_write
from nucseg.training import checkpoint
from nucseg.training.checkpoint import load_checkpoint, write_checkpoint  # noqa: F401

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run; saved as ``config.json`` in the run folder."""

    model: str = "unet-efficientnet-lite0"
    num_classes: int = 3
    encoder_weights: str | None = None
    decoder_channels: tuple[int, ...] | None = None
    dataset: str = "monuseg"
    split: str = "train"
    val_images: int = 4
    limit_images: int | None = None
    stain: str | None = "macenko"
    tile: int = 256
    overlap: float = 0.1
    batch_size: int = 8
    lr: float = 1e-4
    weight_decay: float = 1e-5
    steps: int | None = 2000
    time_budget_s: float | None = None
    warmup_steps: int = 100
    schedule: str = "cosine"
    w0: float = 10.0
    sigma: float = 5.0
    boundary_width: int = 2
    augment: dict[str, Any] | None = field(default_factory=dict)
    seed: int = 0
    checkpoint_every_s: float = 300.0
    checkpoint_every_steps: int | None = None
    precision: str = "auto"
    fp16_weights: bool = True
    workers: int = 0  # threads that augment tiles (and the next batch ahead); 0: in the loop
    # Prediction settings the post-processing is tuned for and the model ships with. 25 % overlap
    # (the paper: 50 %) halves the tiles of a 1000 x 1000 image for -0.001 to -0.003 validation
    # AJI (results/unet/predict_settings.json); whole-image tiles lost 0.014.
    tta: str = "none"
    predict_tile: int = 256
    predict_overlap: float = 0.25
    # A regression channel after the classes: each nucleus's distance to its border, normalised
    # to 1 at its centre (targets.distance_map), learnt by MSE with this weight. Post-processing
    # may then place one marker per distance peak ("distance" rule) instead of per interior blob.
    distance: bool = False
    distance_weight: float = 1.0
    # Keep an exponential moving average of the weights (and BatchNorm statistics) with this
    # decay per step, beside the trained weights. At the end both are tuned on the validation
    # images and the better one is saved (``thresholds.json``: ``weights``, ``compared_weights``).
    ema_decay: float | None = None
    # Start from the weights of this model (a run folder or a model.safetensors file written by
    # nucseg.models.save_model) instead of encoder_weights: fine-tuning. The network must be the
    # same; the file's SHA-256 is recorded in init_from.json.
    init_from: str | None = None

    def __post_init__(self) -> None:
        check_steps_or_budget(self.steps, self.time_budget_s)
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"schedule must be 'cosine' or 'constant', got {self.schedule!r}")
        if self.num_classes not in (2, 3):
            raise ValueError(f"num_classes must be 2 or 3, got {self.num_classes}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {self.ema_decay}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a dict (e.g. a JSON config file); unknown keys raise ``KeyError``."""
        return dataclass_from_dict(cls, values, what="training config")


@dataclass
class TrainingData:
    """Normalised training images with their targets, tiles and validation images."""

    images: list[np.ndarray]
    targets: list[np.ndarray]
    weights: list[np.ndarray]
    tiles: list[tuple[int, tuple[slice, slice]]]
    val: list[tuple[str, np.ndarray, np.ndarray]]
    normaliser: Any
    distances: list[np.ndarray] = field(default_factory=list)  # with TrainConfig.distance


def split_ids(config: TrainConfig) -> tuple[list[str], set[str]]:
    """All image ids of the run and the seeded subset held out for validation (by image)."""
    from nucseg import datasets

    ids = datasets.ids(config.dataset, split=config.split)[: config.limit_images]
    rng = np.random.default_rng(config.seed)
    val_ids = set(rng.choice(ids, size=min(config.val_images, len(ids) - 1), replace=False))
    return ids, val_ids


def prepare_data(config: TrainConfig, *, progress: bool = True) -> TrainingData:
    """Load, normalise and tile the training images; compute targets and weight maps."""
    from nucseg import datasets
    from nucseg.stain import get_normalizer
    from nucseg.targets import distance_map, three_class_target, unet_weight_map
    from nucseg.tiling import tile_grid

    ids, val_ids = split_ids(config)
    samples = [
        datasets.load_sample(config.dataset, i)
        for i in tqdm(ids, desc="load", disable=not progress)
    ]
    normaliser = None
    if config.stain is not None:
        train_images = [s.image for s in samples if s.id not in val_ids]
        normaliser = get_normalizer(config.stain).fit(_mosaic(train_images))
    data = TrainingData([], [], [], [], [], normaliser)
    for sample in samples:
        image = sample.image if normaliser is None else normaliser.transform(sample.image)
        if sample.id in val_ids:
            data.val.append((sample.id, image, sample.labels))
            continue
        target = three_class_target(sample.labels, boundary_width=config.boundary_width)
        if config.num_classes == 2:
            target = (target > 0).astype(np.uint8)
        index = len(data.images)
        data.images.append(image)
        data.targets.append(target)
        data.weights.append(unet_weight_map(sample.labels, w0=config.w0, sigma=config.sigma))
        if config.distance:
            data.distances.append(distance_map(sample.labels).astype(np.float32))
        grid = tile_grid(image.shape[:2], tile=config.tile, overlap=config.overlap)
        data.tiles += [(index, s) for s in grid]
    log.info(
        "%d training tiles from %d images; %d validation images",
        len(data.tiles),
        len(data.images),
        len(data.val),
    )
    return data


def _mosaic(images: list[np.ndarray], *, size: int = 128) -> np.ndarray:
    """Centre crops of every image side by side: the target a stain normaliser is fitted on."""
    crops = []
    for image in images:
        r, c = (image.shape[0] - size) // 2, (image.shape[1] - size) // 2
        crops.append(image[max(r, 0) : max(r, 0) + size, max(c, 0) : max(c, 0) + size])
    return np.concatenate(crops, axis=1)


def batch_indices(step: int, *, n_tiles: int, batch_size: int, seed: int) -> np.ndarray:
    """Tile indices of batch ``step``: epochs of seeded permutations, a pure function of step."""
    out = []
    first = step * batch_size
    for position in range(first, first + batch_size):
        epoch, offset = divmod(position, n_tiles)
        out.append(np.random.default_rng([seed, epoch]).permutation(n_tiles)[offset])
    return np.asarray(out)


class _PerThreadAugmenter:
    """An :class:`~nucseg.augment.Augmenter` per thread (one instance is not thread-safe)."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.local = threading.local()

    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, np.ndarray]:
        from nucseg.augment import AugmentConfig, Augmenter

        if not hasattr(self.local, "augmenter"):
            self.local.augmenter = Augmenter(AugmentConfig(**self.config))
        return self.local.augmenter(*args, **kwargs)


def make_batch(
    data: TrainingData,
    indices: np.ndarray,
    step: int,
    config: TrainConfig,
    augmenter: Any,
    pool: concurrent.futures.Executor | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Augmented ``(images, targets, weights, distances)`` of one batch, given ``step``.

    ``distances`` is ``(N, 1, H, W)`` with :attr:`TrainConfig.distance`, else None.

    Each tile has its own seeded generator, so spreading the tiles over the threads of ``pool``
    (OpenCV and NumPy release the GIL) gives the same batch as one thread.
    """

    def one(k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        image_index, slices = data.tiles[indices[k]]
        image = data.images[image_index][slices]
        target = data.targets[image_index][slices]
        weight = data.weights[image_index][slices]
        distance = data.distances[image_index][slices] if data.distances else None
        if augmenter is None:
            return image, target, weight, distance
        out = augmenter(
            image,
            target.astype(np.int32),
            weight,
            None if distance is None else {"distance": distance},
            rng=np.random.default_rng([config.seed, step, k]),
        )
        distance = out["extra"]["distance"] if distance is not None else None
        return out["image"], out["labels"], out["weight_map"], distance

    items = (
        list(pool.map(one, range(len(indices)))) if pool else [one(k) for k in range(len(indices))]
    )
    images, targets, weights, distances = zip(*items, strict=True)
    stacked = None if distances[0] is None else np.stack(distances)[:, None].astype(np.float32)
    return np.stack(images), np.stack(targets).astype(np.int64), np.stack(weights), stacked


def learning_rate(step: int, total: int, config: TrainConfig) -> float:
    """Linear warm-up then cosine decay to 1 % (or constant) over ``total`` steps."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return config.lr
    progress = min(1.0, (step - config.warmup_steps) / max(1, total - config.warmup_steps))
    return config.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress)))


def _write_json(path: Path, obj: Any) -> None:
    with atomic_write(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(obj, indent=1, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple | set):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def build_model(config: TrainConfig) -> torch.nn.Module:
    """The network of ``config`` (see :func:`nucseg.models.create_model`)."""
    from nucseg.models import create_model

    kwargs = (
        {} if config.decoder_channels is None else {"decoder_channels": config.decoder_channels}
    )
    return create_model(
        config.model,
        num_classes=config.num_classes,
        distance_channels=int(config.distance),
        encoder_weights=config.encoder_weights,
        **kwargs,
    )


def _initialise_from(model: torch.nn.Module, config: TrainConfig, run_dir: Path) -> None:
    """Load ``config.init_from``'s weights into ``model`` and record the file and its SHA-256."""
    import hashlib

    from nucseg.models import load_model

    path = Path(config.init_from)
    weights = path / "model.safetensors" if path.is_dir() else path
    if not weights.is_file():
        raise FileNotFoundError(f"init_from: {weights} does not exist")
    source = load_model(weights)
    if source.nucseg_config.name != config.model:
        raise ValueError(
            f"init_from: {weights} holds a {source.nucseg_config.name!r} network, the config "
            f"trains {config.model!r}"
        )
    model.load_state_dict(source.state_dict(), strict=True)
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    _write_json(run_dir / "init_from.json", {"path": str(weights), "sha256": digest})
    log.info("initialised from %s (sha256 %s)", weights, digest[:12])


def _calibrate_steps(recent: list[float], step: int, elapsed: float, budget: float) -> int:
    """Total steps that end the run at ``budget`` seconds, at the median recent step time."""
    return step + max(1, int((budget - elapsed) / float(np.median(recent))))


def fit(
    config: TrainConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
) -> Path:
    """Train the network of ``config`` and write the run folder ``run_dir``.

    Parameters
    ----------
    config : TrainConfig
        The run's settings.
    run_dir : path-like
        Output folder.
    resume : bool, optional
        Continue from the run's checkpoint (its config must equal ``config``; checked before
        anything is written).
    overwrite : bool, optional
        Start afresh in a non-empty ``run_dir``.
    progress : bool, optional
        Show a progress bar with tiles/s and time left.
    stop_after : int, optional
        Stop (after writing a checkpoint) once this many steps are done, as a killed run would;
        for tests of resumption.

    Returns
    -------
    Path
        The run folder.
    """
    from nucseg.augment import AugmentConfig, Augmenter
    from nucseg.losses import CombinedLoss

    run_dir = Path(run_dir)
    if resume:  # before writing anything: a refused resume leaves the run as it was
        checkpoint.check_config(run_dir, config)
    elif run_dir.exists() and any(run_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{run_dir} is not empty; pass --resume or --overwrite")
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        _write_json(run_dir / "config.json", dataclasses.asdict(config))

    torch.manual_seed(config.seed)
    device = default_device()
    data = prepare_data(config, progress=progress)
    model = build_model(config)
    if config.init_from is not None and not resume:
        _initialise_from(model, config, run_dir)
    model = model.to(device).to(memory_format=torch.channels_last)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    loss_fn = CombinedLoss(num_classes=config.num_classes, distance_weight=config.distance_weight)
    augmenter = None
    if config.augment is not None and config.workers > 0:
        augmenter = _PerThreadAugmenter(config.augment)
    elif config.augment is not None:
        augmenter = Augmenter(AugmentConfig(**config.augment))
    ema = None
    if config.ema_decay is not None:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(
            model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay), use_buffers=True
        )
    state = {"step": 0, "total_steps": config.steps, "history": [], "elapsed": 0.0}
    if resume:
        saved = checkpoint.load_checkpoint(run_dir, config, model, optimiser, device)
        if ema is not None:
            ema.load_state_dict(saved["ema"])
        state = saved["state"]
        log.info("resumed at step %d", state["step"])

    def save_checkpoint() -> None:
        extra = {} if ema is None else {"ema": ema.state_dict()}
        checkpoint.write_checkpoint(
            run_dir, config, model, optimiser, step=state["step"], state=state, **extra
        )

    mean, std = input_stats(model)
    step_seconds: list[float] = []
    last_checkpoint = time.monotonic()
    bar = tqdm(
        total=state["total_steps"],
        initial=state["step"],
        desc="train",
        unit="step",
        disable=not progress,
    )
    pool = ahead = None
    if config.workers > 0:
        pool = concurrent.futures.ThreadPoolExecutor(config.workers)
        ahead = concurrent.futures.ThreadPoolExecutor(1)

    def batch(step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        indices = batch_indices(
            step, n_tiles=len(data.tiles), batch_size=config.batch_size, seed=config.seed
        )
        return make_batch(data, indices, step, config, augmenter, pool)

    upcoming = None
    model.train()
    while state["total_steps"] is None or state["step"] < state["total_steps"]:
        start = time.perf_counter()
        step = state["step"]
        images, targets, weights, distances = (
            upcoming.result() if upcoming is not None else batch(step)
        )
        if ahead is not None:  # assemble the next batch while the model works on this one
            upcoming = ahead.submit(batch, step + 1)
        lr = learning_rate(step, state["total_steps"] or 10**9, config)
        for group in optimiser.param_groups:
            group["lr"] = lr
        x = to_tensor(images, device, mean=mean, std=std)
        with autocast(device, config.precision):
            logits = model(x)
        loss, parts = loss_fn(
            logits.float(),
            torch.from_numpy(targets).to(device),
            torch.from_numpy(weights).to(device),
            None if distances is None else torch.from_numpy(distances).to(device),
        )
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if ema is not None:
            ema.update_parameters(model)
        seconds = time.perf_counter() - start
        state["step"] = step + 1
        state["elapsed"] += seconds
        step_seconds.append(seconds)
        state["history"].append(
            {
                "step": step + 1,
                "elapsed_s": round(state["elapsed"], 2),
                "lr": lr,
                "loss": loss.item(),
                **parts,
            }
        )
        if config.time_budget_s is not None and len(step_seconds) >= 20 and step % 50 == 19:
            # (Re)fit the schedule to the time left, from the recent speed: on a shared machine
            # the speed changes, and the run should still end, annealed, at the budget.
            state["total_steps"] = _calibrate_steps(
                step_seconds[-50:], state["step"], state["elapsed"], config.time_budget_s
            )
            bar.total = state["total_steps"]
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", tiles_s=f"{config.batch_size / seconds:.1f}")
        due = (
            config.checkpoint_every_steps is not None
            and state["step"] % config.checkpoint_every_steps == 0
        )
        if due or time.monotonic() - last_checkpoint > config.checkpoint_every_s:
            save_checkpoint()
            last_checkpoint = time.monotonic()
        if stop_after is not None and state["step"] >= stop_after:
            save_checkpoint()
            bar.close()
            _shutdown(ahead, pool)
            return run_dir
    bar.close()
    _shutdown(ahead, pool)
    save_checkpoint()
    finish(
        run_dir,
        model,
        data,
        config,
        state["history"],
        progress=progress,
        ema=None if ema is None else ema.module,
    )
    return run_dir


def _shutdown(*pools: concurrent.futures.Executor | None) -> None:
    for pool in pools:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


#: Post-processing parameters searched on the validation images at the end of training.
WATERSHED_GRID = {
    "interior_threshold": [0.4, 0.5, 0.6, 0.7],
    "foreground_threshold": [0.4, 0.5, 0.6],
    "min_size": [10, 30],
}


def finish(
    run_dir: Path,
    model: torch.nn.Module,
    data: TrainingData,
    config: TrainConfig,
    history: list[dict[str, Any]],
    *,
    progress: bool = True,
    ema: torch.nn.Module | None = None,
) -> None:
    """Write the final weights, normaliser, history, loss curve and tuned post-processing.

    With ``ema`` (the moving average of the weights) both networks are tuned on the validation
    images and the one of the higher validation score (``_validation_score``) is saved; a tie
    keeps the trained weights.
    """
    from nucseg.models import save_model

    if data.normaliser is not None:
        _write_json(run_dir / "normaliser.json", data.normaliser.to_dict())
    write_history(run_dir, history)
    record = tune_postprocess(model, data.val, config=config, progress=progress)
    if ema is not None:
        ema_record = tune_postprocess(ema, data.val, config=config, progress=progress)
        candidates = (("trained", record), ("ema", ema_record))
        best = {name: _validation_score(r) for name, r in candidates}
        if best["ema"] > best["trained"]:
            model, record = ema, ema_record
        record["weights"] = "ema" if model is ema else "trained"
        record["compared_weights"] = [{"weights": k, "score": v} for k, v in best.items()]
    save_model(run_dir / "model.safetensors", model, fp16=config.fp16_weights)
    _write_json(run_dir / "thresholds.json", record)


def _validation_score(record: dict[str, Any]) -> float:
    """The validation score of a tuned record's chosen parameters: its rule's objective (AJI for
    the watershed and distance rules, precision for the paper's rule); -1 without validation."""
    for row in record.get("tuning", []):
        chosen = row["params"] if "params" in row else {"threshold": row["threshold"]}
        if chosen == record["params"]:
            return float(row.get("objective", row["aji"]))
    return -1.0


def tune_postprocess(
    model: torch.nn.Module,
    val: list[tuple[str, np.ndarray, np.ndarray]],
    *,
    config: TrainConfig,
    progress: bool = True,
) -> dict[str, Any]:
    """Choose the post-processing parameters that maximise AJI on the validation images.

    The maps are predicted as they will be at use (same tiles and TTA), so the thresholds fit
    them. Returns the ``thresholds.json`` record: method, params, prediction settings, the table.
    """
    from nucseg.infer import predict_maps

    settings = {"tile": config.predict_tile, "overlap": config.predict_overlap, "tta": config.tta}
    maps, truths = [], []
    for _, image, labels in tqdm(val, desc="validate", disable=not progress):
        maps.append(predict_maps(model, image, num_classes=config.num_classes, **settings))
        truths.append(labels)
    record: dict[str, Any] = {"validation_images": [v[0] for v in val], "predict": settings}
    return _tune_on_maps(record, maps, truths, config.num_classes)


#: Parameters of the ``"distance"`` rule searched when the model predicts a distance map.
DISTANCE_GRID = {"threshold": [0.4, 0.5, 0.6], "h": [0.1, 0.2, 0.3, 0.4], "min_size": [10, 30]}


def _tune_on_maps(
    record: dict[str, Any], maps: list[np.ndarray], truths: list[np.ndarray], num_classes: int
) -> dict[str, Any]:
    """Fill ``record`` with the post-processing tuned on predicted ``maps`` against ``truths``.

    A 3-class model uses the marker watershed; with a distance channel the ``"distance"`` rule is
    tuned too and the rule of the higher validation AJI kept (``record["compared"]`` lists both).
    """
    from nucseg.postprocess import rule_inputs, tune_paper_threshold, tune_watershed

    if not maps:
        record.update(method="watershed" if num_classes == 3 else "paper", params={})
        return record
    if num_classes == 2 and maps[0].shape[2] == 2:
        foreground = [rule_inputs(m, num_classes=2, method="paper") for m in maps]
        threshold, table = tune_paper_threshold(foreground, truths)
        record.update(method="paper", params={"threshold": threshold}, tuning=table)
        return record
    grids = {"watershed": WATERSHED_GRID} if num_classes == 3 else {}
    if maps[0].shape[2] > num_classes:
        grids["distance"] = DISTANCE_GRID
    results = {}
    for method, grid in grids.items():
        inputs = [rule_inputs(m, num_classes=num_classes, method=method) for m in maps]
        params, table = tune_watershed(inputs, truths, grid=grid, method=method)
        best = max(row["aji"] for row in table)
        results[method] = (best, params, table)
    method = max(results, key=lambda name: results[name][0])  # first of a tie: watershed
    _, params, table = results[method]
    record.update(method=method, params=params, tuning=table)
    if len(results) > 1:
        record["compared"] = [
            {"method": m, "aji": r[0], "params": r[1]} for m, r in results.items()
        ]
    return record


def retune(
    run_dir: str | Path,
    *,
    tta: str | None = None,
    tile: int | None = None,
    overlap: float | None = None,
    progress: bool = True,
    params_from: str | Path | None = None,
) -> dict:
    """Re-tune a finished run's post-processing; rewrites thresholds.json.

    ``tta``, ``tile`` and ``overlap`` override the run's prediction settings (and are stored in
    the new thresholds.json, so the model then predicts that way by default).

    ``params_from`` names another run (or model folder) whose tuned post-processing and
    prediction settings are copied instead of tuning: for a run trained on every image
    (``val_images`` 0), which has no validation images of its own, refitted with the recipe
    of a run that had them. The record names the source (``params_from``) and its validation
    images (``source_validation_images``).
    """
    from nucseg import datasets
    from nucseg.models import load_model
    from nucseg.stain import StainNormalizer

    run_dir = Path(run_dir)
    values = json.loads((run_dir / "config.json").read_text())
    if params_from is not None:
        if any(v is not None for v in (tta, tile, overlap)):
            raise ValueError(
                "params_from copies the prediction settings too: drop tta/tile/overlap"
            )
        source = Path(params_from)
        source_config = json.loads((source / "config.json").read_text())
        if source_config["num_classes"] != values["num_classes"]:
            raise ValueError(
                f"{source} predicts {source_config['num_classes']} classes and {run_dir} "
                f"{values['num_classes']}: its post-processing does not apply"
            )
        copied = json.loads((source / "thresholds.json").read_text())
        record = {
            "validation_images": [],
            "predict": copied["predict"],
            "method": copied["method"],
            "params": copied["params"],
            "params_from": str(source),
            "source_validation_images": copied["validation_images"],
        }
        _write_json(run_dir / "thresholds.json", record)
        return record
    overrides = {"tta": tta, "predict_tile": tile, "predict_overlap": overlap}
    values.update({k: v for k, v in overrides.items() if v is not None})
    config = TrainConfig.from_dict(values)
    normaliser_file = run_dir / "normaliser.json"
    normaliser = None
    if normaliser_file.is_file():
        normaliser = StainNormalizer.from_dict(json.loads(normaliser_file.read_text()))
    val = []
    for image_id in sorted(split_ids(config)[1]):
        sample = datasets.load_sample(config.dataset, image_id)
        image = sample.image if normaliser is None else normaliser.transform(sample.image)
        val.append((image_id, image, sample.labels))
    model = load_model(run_dir / "model.safetensors")
    record = tune_postprocess(model, val, config=config, progress=progress)
    _write_json(run_dir / "thresholds.json", record)
    return record


def budgeted_steps(
    steps: int | None,
    time_budget_s: float | None,
    *,
    desc: str,
    progress: bool = True,
    start_step: int = 0,
    elapsed_before: float = 0.0,
) -> Iterator[tuple[int, float, Any]]:
    """Count training steps until ``steps`` are done or ``time_budget_s`` seconds have passed.

    Exactly one of the two limits must be given. Yields ``(step, elapsed_s, bar)`` before each
    step (``step`` from ``start_step``, ``elapsed_s`` from ``elapsed_before``: a resumed run
    continues its count and its budget; ``bar`` is the tqdm progress bar, for ``set_postfix``);
    the bar advances when the caller asks for the next step. A training loop with no schedule of
    its own (Mask R-CNN, the GB U-Net) runs as ``for step, elapsed, bar in budgeted_steps(...)``.
    """
    check_steps_or_budget(steps, time_budget_s)
    start, step = time.monotonic() - elapsed_before, start_step
    with tqdm(total=steps, initial=step, desc=desc, unit="step", disable=not progress) as bar:
        while True:
            elapsed = time.monotonic() - start
            if (steps is not None and step >= steps) or (
                time_budget_s is not None and elapsed >= time_budget_s
            ):
                return
            yield step, elapsed, bar
            step += 1
            bar.update(1)


def write_history(
    run_dir: Path, history: list[dict[str, Any]], *, loss_label: str = "L_WCE + (1 - Dice)"
) -> None:
    """``history.csv`` (one row per step) and ``loss.png`` (loss against step, smoothed)."""
    if not history:
        return
    columns = list(history[0])
    with (
        atomic_write(run_dir / "history.csv", overwrite=True) as tmp,
        open(tmp, "w", newline="") as handle,
    ):
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.array([h["step"] for h in history])
    loss = np.array([h["loss"] for h in history])
    width = max(1, len(loss) // 50)
    smooth = np.convolve(loss, np.ones(width) / width, mode="valid")
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(steps, loss, color="0.8", linewidth=0.5, label="loss")
    ax.plot(steps[width - 1 :], smooth, color="C0", label=f"mean of {width} steps")
    ax.set_xlabel("step")
    ax.set_ylabel(loss_label)
    ax.legend()
    fig.tight_layout()
    with atomic_write(run_dir / "loss.png", overwrite=True) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
