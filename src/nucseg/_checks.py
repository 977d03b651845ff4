"""Validation of the two data contracts, done once at public entry points.

Images are ``(H, W, 3) uint8`` RGB arrays; label images are ``(H, W)`` integer arrays with
0 = background and objects 1..N (the values need not be consecutive on input).

The command line's options are checked here too, by the same functions for ``nucseg segment``
and ``nucseg slide`` (prediction settings, a method's parameters, microns per pixel), before any
model is loaded.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


def check_image(image: np.ndarray, *, name: str = "image") -> np.ndarray:
    """Return ``image`` if it is an ``(H, W, 3) uint8`` array, else raise ``ValueError``."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"{name}: expected an RGB image of shape (H, W, 3), got shape {image.shape}"
        )
    if image.dtype != np.uint8:
        raise ValueError(f"{name}: expected dtype uint8, got {image.dtype}")
    return image


def check_labels(labels: np.ndarray, *, name: str = "labels") -> np.ndarray:
    """Return ``labels`` if it is a 2-D non-negative integer array, else raise ``ValueError``."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D label image, got shape {labels.shape}")
    if labels.dtype == bool or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name}: expected an integer label image, got dtype {labels.dtype}")
    if labels.size and np.issubdtype(labels.dtype, np.signedinteger) and labels.min() < 0:
        raise ValueError(
            f"{name}: label values must be >= 0 (0 = background), found {labels.min()}"
        )
    return labels


def check_same_shape(a: np.ndarray, b: np.ndarray, *, names: tuple[str, str]) -> None:
    """Raise ``ValueError`` unless ``a`` and ``b`` have the same (rows, columns)."""
    if a.shape[:2] != b.shape[:2]:
        raise ValueError(
            f"{names[0]} has shape {a.shape[:2]} but {names[1]} has shape {b.shape[:2]}; "
            "they must cover the same pixels"
        )


def check_steps_or_budget(steps: int | None, time_budget_s: float | None) -> None:
    """Raise ``ValueError`` unless exactly one training length is given: steps or seconds."""
    if (steps is None) == (time_budget_s is None):
        raise ValueError("give exactly one of steps and time_budget_s")


def dataclass_from_dict(cls: type[T], values: Mapping[str, Any], *, what: str) -> T:
    """Build the dataclass ``cls`` from a dict (e.g. a JSON config) with a clear error.

    Unknown keys raise ``KeyError`` naming them, ``what`` (e.g. ``"training config"``) and the
    valid keys; JSON lists given for tuple-typed fields (``tuple[int, ...]`` etc.) become tuples.
    """
    check_keys(values, cls, what=what)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = dict(values)
    for name, value in values.items():
        if isinstance(value, list) and str(fields[name].type).startswith("tuple"):
            values[name] = tuple(value)
    return cls(**values)


def check_keys(values: Mapping[str, Any], cls: type, *, what: str) -> None:
    """Raise ``KeyError`` if ``values`` has a key that is not a field of the dataclass ``cls``."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise KeyError(f"unknown {what} key(s) {unknown}; valid: {sorted(names)}")


# --- command-line options: one set of checks for `segment` and `slide`, run before any model ---

#: Largest network tile side accepted: 2048 pixels already take about 4 GB of activations for a
#: batch of 8 on the bundled U-Net; a larger tile gains nothing (tiles overlap) and can exhaust
#: the machine's memory (issue 29: 65536 reached 17 GB in a minute).
MAX_TILE = 2048

#: Plausible microns per pixel of a microscope scan: 0.05 (beyond 100x oil immersion) to 5
#: (a 2x overview). A value outside is a unit mistake (a file's resolution in inches read as
#: centimetres, pixels per micron given as microns per pixel, ...) unless forced.
MPP_RANGE = (0.05, 5.0)


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


#: What each prediction option of a model accepts: a check and its description.
PREDICT_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "tile": (
        lambda v: _is_int(v) and 32 <= v <= MAX_TILE and v % 32 == 0,
        f"a multiple of 32 from 32 to {MAX_TILE} (the network halves the tile 5 times), e.g. 256",
    ),
    "overlap": (
        lambda v: _is_number(v) and 0 <= v < 1,
        "a fraction of the tile in [0, 1), e.g. 0.25",
    ),
    "batch_size": (
        lambda v: _is_int(v) and 1 <= v <= 4096,
        "a whole number of tiles from 1 to 4096, e.g. 8",
    ),
    "tta": (lambda v: v in ("none", "flips", "d4"), "one of 'none', 'flips', 'd4'"),
    "precision": (
        lambda v: v in ("auto", "bf16", "fp32", "int8"),
        "one of 'auto', 'bf16', 'fp32', 'int8'",
    ),
    "backend": (lambda v: v in ("auto", "torch", "openvino"), "one of 'auto', 'torch', 'openvino'"),
    "stain": (lambda v: v in ("auto", "always", "never"), "one of 'auto', 'always', 'never'"),
}


def check_predict_option(key: str, value: Any, *, option: str | None = None) -> Any:
    """Return ``value`` if the model's prediction option ``key`` accepts it, else raise.

    ``option`` is how the user gave it, named in the message (default ``--param KEY=VALUE``;
    ``nucseg slide`` passes ``--tile 100`` and the like).

    Raises
    ------
    TypeError
        If ``key`` is not a prediction option (the message lists them).
    ValueError
        If ``value`` is not allowed (the message says what is).
    """
    if key not in PREDICT_CHECKS:
        raise TypeError(f"a model has no parameter(s) ['{key}']; valid: {sorted(PREDICT_CHECKS)}")
    ok, allowed = PREDICT_CHECKS[key]
    if not ok(value):
        given = option if option is not None else f"--param {key}={json.dumps(value)}"
        raise ValueError(f"{given}: {key} must be {allowed}")
    return value


def check_method_params(
    method: str, defaults: Mapping[str, Any], params: Mapping[str, Any]
) -> None:
    """Raise unless every ``params`` key is one of ``defaults`` and its value has the default's
    kind (a number for a number, true/false for a flag, text for text).

    Raises
    ------
    TypeError
        If a key is unknown (the message lists the valid ones).
    ValueError
        If a value is of the wrong kind, e.g. ``--param sigma="banana": sigma must be a number``.
    """
    unknown = set(params) - set(defaults)
    if unknown:
        raise TypeError(
            f"method {method!r} has no parameter(s) {sorted(unknown)}; valid: {sorted(defaults)}"
        )
    for key, value in params.items():
        default = defaults[key]
        if isinstance(default, bool):
            ok, kind = isinstance(value, bool), "true or false"
        elif _is_number(default):
            ok, kind = _is_number(value) and math.isfinite(value), "a finite number"
        elif isinstance(default, str):
            ok, kind = isinstance(value, str), "text"
        else:
            continue  # None or a structure: the method checks it
        if not ok:
            raise ValueError(
                f"--param {key}={json.dumps(value)}: {key} must be {kind} (default "
                f"{json.dumps(default)})"
            )


def check_mpp(value: Any, *, what: str, force: bool = False) -> float:
    """Return ``value`` as microns per pixel if it is finite, > 0 and within :data:`MPP_RANGE`
    (the range is not enforced with ``force``); ``what`` names where it came from.

    Raises
    ------
    ValueError
        Naming ``what``, the value and the range.
    """
    try:
        mpp = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what}: microns per pixel must be a number, got {value!r}") from None
    if not (math.isfinite(mpp) and mpp > 0):
        raise ValueError(f"{what}: microns per pixel must be a finite number > 0, got {mpp}")
    low, high = MPP_RANGE
    if not force and not low <= mpp <= high:
        raise ValueError(
            f"{what}: {mpp:g} um/px is outside the plausible {low:g}-{high:g} um/px of a "
            "microscope scan (40x is about 0.25, 20x about 0.5); give the right --mpp, or "
            "--force-mpp to use it anyway"
        )
    return mpp


def check_count(value: int | None, *, option: str, low: int, what: str) -> None:
    """Raise ``ValueError`` naming ``option`` unless ``value`` is None or at least ``low``."""
    if value is not None and value < low:
        raise ValueError(f"{option} must be {what}, got {value}")
