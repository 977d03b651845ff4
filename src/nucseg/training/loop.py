"""The training loop: ``fit(config, run_dir)`` -> a run folder (see :mod:`nucseg.train`)."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from nucseg._checks import check_steps_or_budget
from nucseg.infer import autocast, default_device, input_stats, to_tensor
from nucseg.training import checkpoint
from nucseg.training.config import TrainConfig
from nucseg.training.data import (
    UNKNOWN_TYPE,
    TrainingData,
    _PerThreadAugmenter,
    batch_indices,
    make_batch,
    prepare_data,
    weighted_batch_indices,
)
from nucseg.training.outputs import _write_json
from nucseg.training.tune import finish

log = logging.getLogger(__name__)


def learning_rate(step: int, total: int, config: TrainConfig) -> float:
    """Linear warm-up then cosine decay to 1 % (or constant) over ``total`` steps."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return config.lr
    progress = min(1.0, (step - config.warmup_steps) / max(1, total - config.warmup_steps))
    return config.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress)))


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
        type_channels=config.type_classes,
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
    state = source.state_dict()
    extra = model.nucseg_config.type_channels - source.nucseg_config.type_channels
    if extra > 0:  # a new type head: its channels keep their fresh initialisation
        own = model.state_dict()
        for key, value in state.items():
            if own[key].shape != value.shape:
                grown = own[key].clone()
                grown[: value.shape[0]] = value
                state[key] = grown
    model.load_state_dict(state, strict=True)
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    _write_json(run_dir / "init_from.json", {"path": str(weights), "sha256": digest})
    log.info("initialised from %s (sha256 %s)", weights, digest[:12])


def check_init_split(config: TrainConfig) -> None:
    """Refuse to validate a fine-tune on images its starting point trained on.

    The seed draws the validation images (:func:`nucseg.training.data.split_ids`): a fine-tune
    with another seed, or one started from a refit on every image (``val_images`` 0), would be
    tuned and judged on images its starting weights have learnt, and its validation figures would
    look held out without being so. A refit (``val_images`` 0 here) is not judged on validation
    and may start from anything.
    """
    import json

    from nucseg.training.data import split_ids

    if config.init_from is None or not config.val_images:
        return
    source = Path(config.init_from)
    source_config = source / "config.json" if source.is_dir() else source.with_name("config.json")
    if not source_config.is_file():
        return  # a bare weights file: nothing says what it trained on
    theirs = TrainConfig.from_dict(json.loads(source_config.read_text()))
    if theirs.dataset != config.dataset:
        return
    _, ours = split_ids(config)
    held_out = split_ids(theirs)[1] if theirs.val_images else set()
    seen = sorted(ours - held_out)
    if seen:
        raise ValueError(
            f"init_from: {config.init_from} trained on {len(seen)} of this run's "
            f"{len(ours)} validation images ({', '.join(seen)}), so its validation figures would "
            f"not be held out; give it the starting run's seed ({theirs.seed}) and val_images "
            f"({theirs.val_images}), or train on every image (val_images 0)"
        )


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
    else:
        if run_dir.exists() and any(run_dir.iterdir()) and not overwrite:
            raise FileExistsError(f"{run_dir} is not empty; pass --resume or --overwrite")
        check_init_split(config)  # before writing anything, as the resume check
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
    class_weights = type_class_weights(data, config)
    if class_weights is not None:
        _write_json(run_dir / "type_class_weights.json", [round(w, 6) for w in class_weights])
        class_weights = torch.tensor(class_weights, dtype=torch.float32, device=device)
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
        from nucseg.atomic import worker_thread_signals  # Ctrl-C goes to the main thread

        threads = concurrent.futures.ThreadPoolExecutor
        pool = threads(config.workers, initializer=worker_thread_signals)
        ahead = threads(1, initializer=worker_thread_signals)

    def batch(step: int) -> tuple[np.ndarray, ...]:
        if data.tile_probs is not None:
            indices = weighted_batch_indices(
                step, data.tile_probs, batch_size=config.batch_size, seed=config.seed
            )
        else:
            indices = batch_indices(
                step, n_tiles=len(data.tiles), batch_size=config.batch_size, seed=config.seed
            )
        return make_batch(data, indices, step, config, augmenter, pool)

    upcoming = None
    model.train()
    while state["total_steps"] is None or state["step"] < state["total_steps"]:
        start = time.perf_counter()
        step = state["step"]
        images, targets, weights, distances, *kinds = (
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
        segmentation = logits[:, : logits.shape[1] - config.type_classes]
        loss, parts = loss_fn(
            segmentation.float(),
            torch.from_numpy(targets).to(device),
            torch.from_numpy(weights).to(device),
            None if distances is None else torch.from_numpy(distances).to(device),
        )
        if kinds:
            loss, parts = _add_type_loss(
                loss, parts, logits, kinds[0], config, device, class_weights
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


def _add_type_loss(
    loss: torch.Tensor,
    parts: dict[str, float],
    logits: torch.Tensor,
    kinds: np.ndarray,
    config: TrainConfig,
    device: torch.device,
    class_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Add the type head's cross-entropy, over the pixels whose type is known (not -1)."""
    target = torch.from_numpy(kinds).to(device)
    if not bool((target >= 0).any()):
        return loss, {**parts, "type_ce": -1.0}  # no known type in this batch
    type_logits = logits[:, logits.shape[1] - config.type_classes :].float()
    ce = torch.nn.functional.cross_entropy(
        type_logits, target, weight=class_weights, ignore_index=-1
    )
    return loss + config.type_weight * ce, {**parts, "type_ce": float(ce.detach())}


def type_class_weights(data: TrainingData, config: TrainConfig) -> list[float] | None:
    """The type cross-entropy's per-class weights for ``config.type_class_weights``.

    "balanced": frequency ** -0.5 of each class over the training images' pixels of known type,
    scaled so that the mean weight of a pixel is 1. A class with no pixel gets the largest
    weight of the others.
    """
    wanted = config.type_class_weights
    if not config.type_classes or wanted is None:
        return None
    if not isinstance(wanted, str):
        return [float(w) for w in wanted]
    counts = np.zeros(config.type_classes, dtype=np.float64)
    for kinds in data.types:
        counts += np.bincount(kinds.ravel(), minlength=UNKNOWN_TYPE + 1)[: config.type_classes]
    if counts.sum() == 0:
        return None
    freq = counts / counts.sum()
    present = freq > 0
    weights = np.zeros_like(freq)
    weights[present] = freq[present] ** -0.5
    weights /= float((freq * weights).sum())
    weights[~present] = weights[present].max()
    return [float(w) for w in weights]


def _shutdown(*pools: concurrent.futures.Executor | None) -> None:
    for pool in pools:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def budgeted_steps(
    steps: int | None,
    time_budget_s: float | None,
    *,
    desc: str,
    progress: bool = True,
    start_step: int = 0,
    elapsed_before: float = 0.0,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[tuple[int, float, Any]]:
    """Count training steps until ``steps`` are done or ``time_budget_s`` seconds have passed.

    Exactly one of the two limits must be given. Yields ``(step, elapsed_s, bar)`` before each
    step (``step`` from ``start_step``, ``elapsed_s`` from ``elapsed_before``: a resumed run
    continues its count and its budget; ``bar`` is the tqdm progress bar, for ``set_postfix``);
    the bar advances when the caller asks for the next step. A training loop with no schedule of
    its own (Mask R-CNN, the GB U-Net) runs as ``for step, elapsed, bar in budgeted_steps(...)``.
    ``clock`` gives the time in seconds (tests pass a fake one).
    """
    check_steps_or_budget(steps, time_budget_s)
    start, step = clock() - elapsed_before, start_step
    with tqdm(total=steps, initial=step, desc=desc, unit="step", disable=not progress) as bar:
        while True:
            elapsed = clock() - start
            if (steps is not None and step >= steps) or (
                time_budget_s is not None and elapsed >= time_budget_s
            ):
                return
            yield step, elapsed, bar
            step += 1
            bar.update(1)
