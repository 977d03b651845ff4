"""Validation of the two data contracts, done once at public entry points.

Images are ``(H, W, 3) uint8`` RGB arrays; label images are ``(H, W)`` integer arrays with
0 = background and objects 1..N (the values need not be consecutive on input).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
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
