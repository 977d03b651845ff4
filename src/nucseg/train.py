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

The code lives in :mod:`nucseg.training`: ``config`` (:class:`TrainConfig`), ``data`` (tiles,
targets, seeded batches), ``loop`` (:func:`fit`), ``checkpoint`` (safetensors + JSON), ``tune``
(post-processing on the validation images, :func:`retune`) and ``outputs`` (history, loss curve);
this module re-exports their public names.
"""

from nucseg.training.checkpoint import load_checkpoint, write_checkpoint
from nucseg.training.config import TrainConfig
from nucseg.training.data import (
    TrainingData,
    _mosaic,
    _PerThreadAugmenter,
    batch_indices,
    make_batch,
    prepare_data,
    split_ids,
)
from nucseg.training.loop import (
    _calibrate_steps,
    budgeted_steps,
    build_model,
    fit,
    learning_rate,
)
from nucseg.training.outputs import _jsonable, _write_json, write_history
from nucseg.training.tune import (
    DISTANCE_GRID,
    WATERSHED_GRID,
    _tune_on_maps,
    _validation_score,
    finish,
    retune,
    tune_postprocess,
)

__all__ = [
    "DISTANCE_GRID",
    "WATERSHED_GRID",
    "TrainConfig",
    "TrainingData",
    "_PerThreadAugmenter",
    "_calibrate_steps",
    "_jsonable",
    "_mosaic",
    "_tune_on_maps",
    "_validation_score",
    "_write_json",
    "batch_indices",
    "budgeted_steps",
    "build_model",
    "finish",
    "fit",
    "learning_rate",
    "load_checkpoint",
    "make_batch",
    "prepare_data",
    "retune",
    "split_ids",
    "tune_postprocess",
    "write_checkpoint",
    "write_history",
]
