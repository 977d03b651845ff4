"""Training data: normalised images, targets and tiles; seeded batches, a pure function of the
step (so a resumed run sees exactly the batches of an unbroken one)."""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from nucseg.training.config import TrainConfig

log = logging.getLogger(__name__)


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
    # with TrainConfig.type_classes: per image a uint8 map (0 background, 1-4 the nucleus's
    # type, UNKNOWN_TYPE where its source has no types)
    types: list[np.ndarray] = field(default_factory=list)
    # with TrainConfig.sources: the probability of drawing each tile
    tile_probs: np.ndarray | None = None
    # validation images per source name (the primary source's under its dataset name)
    val_sources: dict[str, list[str]] = field(default_factory=dict)


#: The type-map value of pixels whose type is not known (their source has no types).
UNKNOWN_TYPE = 5


def split_ids(config: TrainConfig) -> tuple[list[str], set[str]]:
    """All image ids of the run and the seeded subset held out for validation (by image)."""
    from nucseg import datasets

    ids = datasets.ids(config.dataset, split=config.split)[: config.limit_images]
    rng = np.random.default_rng(config.seed)
    val_ids = set(rng.choice(ids, size=min(config.val_images, len(ids) - 1), replace=False))
    return ids, val_ids


def source_split(source: dict[str, Any], seed: int, index: int) -> tuple[list[str], set[str]]:
    """Ids of a further training source and the seeded subset it holds out for validation."""
    from nucseg import datasets

    ids = datasets.ids(source["dataset"], split=source["split"])[: source.get("limit")]
    n_val = min(int(source["val_images"]), len(ids) - 1)
    rng = np.random.default_rng([seed, 1000 + index])
    return ids, set(rng.choice(ids, size=n_val, replace=False)) if n_val > 0 else set()


def _load_sources(config: TrainConfig, progress: bool) -> tuple[list[Any], set[str], list[int]]:
    """Every sample of the run at the model's scale, the validation ids and each one's source."""
    from nucseg import datasets

    splits = source_splits(config)
    for name, source_ids, _ in splits:  # the primary source too: never breast
        if any("breast" in datasets.load_sample(name, i).organ.lower() for i in source_ids[:1]):
            raise ValueError(f"source {name}: breast tissue is never trained on")
    # every source, the primary first, at the model's scale (a no-op for MoNuSeg, whose samples
    # state no mpp)
    samples, val_ids, origin = [], set(), []
    for index, (name, source_ids, source_val) in enumerate(splits):
        for image_id in tqdm(source_ids, desc=f"load {name}", disable=not progress):
            samples.append(_at_scale(datasets.load_sample(name, image_id), config.mpp))
            origin.append(index)
            if image_id in source_val:
                val_ids.add(image_id)
    return samples, val_ids, origin


def validation_samples(config: TrainConfig) -> list[Any]:
    """The run's validation samples of every source, in :func:`prepare_data`'s order, each
    source's at the model's scale (not normalised): what training tuned its post-processing on,
    and what ``nucseg tune`` tunes on again."""
    from nucseg import datasets

    return [_at_scale(datasets.load_sample(name, i), config.mpp)
            for name, source_ids, source_val in source_splits(config)
            for i in source_ids if i in source_val]  # fmt: skip


def source_splits(config: TrainConfig) -> list[tuple[str, list[str], set[str]]]:
    """Per source, the primary first: its dataset, its image ids and the ids it holds out for
    validation (:func:`split_ids`, :func:`source_split`)."""
    ids, val_ids = split_ids(config)
    out = [(config.dataset, ids, val_ids)]
    for index, source in enumerate(config.all_sources[1:], start=1):
        out.append((source["dataset"], *source_split(source, config.seed, index)))
    return out


def _at_scale(sample: Any, mpp: float) -> Any:
    """A sample resampled to ``mpp`` microns per pixel (nucseg.scale's rule)."""
    import dataclasses

    from nucseg.scale import resize_image, resize_labels, scale_factor, scaled_shape

    factor = scale_factor(sample.mpp, mpp)
    if factor == 1.0:
        return sample
    shape = scaled_shape(sample.image.shape, factor)
    return dataclasses.replace(sample, image=resize_image(sample.image, shape),
                               labels=resize_labels(sample.labels, shape), mpp=mpp)  # fmt: skip


def type_map(labels: np.ndarray, types: dict[int, int] | None) -> np.ndarray:
    """``(H, W) uint8``: each nucleus's type (1-4), 0 background; :data:`UNKNOWN_TYPE` if None."""
    if types is None:
        return np.full(labels.shape, UNKNOWN_TYPE, np.uint8)
    lookup = np.zeros(int(labels.max()) + 1, np.uint8)
    for label, kind in types.items():
        if label < lookup.size:
            lookup[label] = kind
    return lookup[labels]


def prepare_data(config: TrainConfig, *, progress: bool = True) -> TrainingData:
    """Load, normalise and tile the training images; compute targets and weight maps."""
    from nucseg.stain import get_normalizer
    from nucseg.targets import distance_map, three_class_target, unet_weight_map
    from nucseg.tiling import tile_grid

    samples, val_ids, origin = _load_sources(config, progress)
    normaliser = None
    if config.stain is not None:
        train_images = [s.image for s in samples if s.id not in val_ids]
        normaliser = get_normalizer(config.stain).fit(_mosaic(train_images))
    data = TrainingData([], [], [], [], [], normaliser)
    source_of_tile = []
    for sample, source in zip(samples, origin, strict=True):
        image = sample.image if normaliser is None else normaliser.transform(sample.image)
        if sample.id in val_ids:
            data.val.append((sample.id, image, sample.labels))
            data.val_sources.setdefault(sample.dataset, []).append(sample.id)
            continue
        if config.stain_after_augment:  # normalised per tile in make_batch
            image = sample.image
        target = three_class_target(sample.labels, boundary_width=config.boundary_width)
        if config.num_classes == 2:
            target = (target > 0).astype(np.uint8)
        index = len(data.images)
        data.images.append(image)
        data.targets.append(target)
        data.weights.append(unet_weight_map(sample.labels, w0=config.w0, sigma=config.sigma))
        if config.distance:
            data.distances.append(distance_map(sample.labels).astype(np.float32))
        if config.type_classes:
            data.types.append(type_map(sample.labels, sample.types))
        grid = tile_grid(image.shape[:2], tile=config.tile, overlap=config.overlap)
        data.tiles += [(index, s) for s in grid]
        source_of_tile += [source] * len(grid)
    if config.sources is not None:
        data.tile_probs = tile_probabilities(source_of_tile, config)
    log.info(
        "%d training tiles from %d images; %d validation images",
        len(data.tiles),
        len(data.images),
        len(data.val),
    )
    return data


def tile_probabilities(source_of_tile: list[int], config: TrainConfig) -> np.ndarray:
    """Each tile's chance to be drawn: its source's weight shared among the source's tiles."""
    sources = np.asarray(source_of_tile)
    weights = np.array([float(s["weight"]) for s in config.all_sources])
    counts = np.bincount(sources, minlength=len(weights)).astype(float)
    if np.any(counts[weights > 0] == 0):
        empty = [config.all_sources[i]["dataset"] for i in np.flatnonzero(counts == 0)]
        raise ValueError(f"sources with no training tiles: {', '.join(empty)}")
    probs = weights[sources] / counts[sources]
    return probs / probs.sum()


def weighted_batch_indices(
    step: int, probs: np.ndarray, *, batch_size: int, seed: int
) -> np.ndarray:
    """Tile indices of batch ``step`` drawn with ``probs``: a pure function of the step."""
    rng = np.random.default_rng([seed, 7, step])
    return rng.choice(len(probs), size=batch_size, p=probs)


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
        if data.types:  # carried through the (nearest-neighbour) label warps with the target
            target = target.astype(np.int32) + 3 * data.types[image_index][slices]
        if augmenter is not None:
            out = augmenter(
                image,
                target.astype(np.int32),
                weight,
                None if distance is None else {"distance": distance},
                rng=np.random.default_rng([config.seed, step, k]),
            )
            distance = out["extra"]["distance"] if distance is not None else None
            image, target, weight = out["image"], out["labels"], out["weight_map"]
        if config.stain_after_augment:
            # estimate + apply, not transform: no shared state between threads, and a tile
            # whose estimate is rejected falls back quietly (thousands of tiles per run)
            normaliser = data.normaliser
            image = normaliser.apply(image, normaliser.estimate(image, warn=False))
        kinds = None
        if data.types:
            target, kinds = np.asarray(target) % 3, np.asarray(target) // 3
            kinds = np.where(kinds == UNKNOWN_TYPE, -1, kinds)
        return image, target, weight, distance, kinds

    items = (
        list(pool.map(one, range(len(indices)))) if pool else [one(k) for k in range(len(indices))]
    )
    images, targets, weights, distances, kinds = zip(*items, strict=True)
    stacked = None if distances[0] is None else np.stack(distances)[:, None].astype(np.float32)
    batch = np.stack(images), np.stack(targets).astype(np.int64), np.stack(weights), stacked
    if kinds[0] is None:
        return batch
    return (*batch, np.stack(kinds).astype(np.int64))
