"""Resumable training states that are data, never code: safetensors for tensors, JSON for the rest.

A checkpoint in a run folder is two files:

- ``checkpoint-<step>.safetensors``: every tensor (the network's weights and buffers, the
  optimiser's per-parameter state, the torch random state, and any dict of tensors passed as
  ``extra``, e.g. the moving average of the weights);
- ``checkpoint.json``: the config, the optimiser's ``param_groups`` and non-tensor state, the
  NumPy random state, step, history and the other ``extra`` values, plus the name and SHA-256
  of the tensor file.

The tensor file is written first under a new name, then ``checkpoint.json`` (each atomically),
then older tensor files are removed: a process killed at any moment leaves a consistent pair.
Neither format can run code when read (``torch.load`` unpickles; these files are never unpickled).
An old ``checkpoint.pt`` (a pickle) is refused with a message, not read.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from nucseg.atomic import atomic_write, read_json
from nucseg.provenance import file_sha256

FORMAT = "nucseg.checkpoint/1"
RECORD = "checkpoint.json"
LEGACY = "checkpoint.pt"
_TENSORS = re.compile(r"^checkpoint-(\d+)\.safetensors$")


def exists(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a checkpoint (``checkpoint.json``)."""
    return (Path(run_dir) / RECORD).is_file()


def jsonable(value: Any) -> Any:
    """``value`` as JSON would give it back: tuples become lists, NumPy scalars numbers."""
    return json.loads(json.dumps(value, default=_json_default))


def _json_default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple | set):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def _is_tensor_dict(value: Any) -> bool:
    return (
        isinstance(value, Mapping)
        and bool(value)
        and all(isinstance(v, torch.Tensor) for v in value.values())
    )


def write_checkpoint(
    run_dir: str | Path,
    config: Any,
    model: torch.nn.Module,
    optimiser: torch.optim.Optimizer,
    *,
    step: int,
    **extra: Any,
) -> Path:
    """Save a resumable training state: config, weights, optimiser, torch RNG and ``extra``.

    ``extra`` values that are dicts of tensors (a ``state_dict``) go to the tensor file, the
    others (JSON-compatible: numbers, lists, dicts, NumPy random states) to ``checkpoint.json``.
    Returns the path of ``checkpoint.json``.
    """
    return _write(
        Path(run_dir),
        dataclasses.asdict(config),
        model.state_dict(),
        optimiser.state_dict(),
        torch.get_rng_state(),
        step=step,
        extra=extra,
    )


def _write(
    run_dir: Path,
    config: dict[str, Any],
    model_state: Mapping[str, torch.Tensor],
    optimiser_state: dict[str, Any],
    torch_rng: torch.Tensor,
    *,
    step: int,
    extra: dict[str, Any],
) -> Path:
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}

    def put(prefix: str, state: Mapping[str, torch.Tensor]) -> None:
        for key, tensor in state.items():
            tensors[f"{prefix}/{key}"] = tensor.detach().to("cpu", copy=True).contiguous()

    put("model", model_state)
    scalars: dict[str, dict[str, Any]] = {}
    for index, values in optimiser_state["state"].items():
        put(f"optimiser/{index}", {k: v for k, v in values.items() if torch.is_tensor(v)})
        scalars[str(index)] = {k: v for k, v in values.items() if not torch.is_tensor(v)}
    tensors["rng/torch"] = torch_rng.detach().to("cpu", copy=True)
    groups = [key for key, value in extra.items() if _is_tensor_dict(value)]
    for key in groups:
        put(f"extra/{key}", extra[key])
    name = f"checkpoint-{step:09d}.safetensors"
    with atomic_write(run_dir / name, overwrite=True) as tmp:
        save_file(tensors, tmp)
    record = {
        "format": FORMAT,
        "step": step,
        "tensors": name,
        "tensors_sha256": file_sha256(run_dir / name),
        "config": config,
        "optimiser": {
            "param_groups": optimiser_state["param_groups"],
            "state_scalars": scalars,
            "state_keys": sorted(optimiser_state["state"]),
        },
        "tensor_extras": groups,
        "extra": {k: v for k, v in extra.items() if k not in groups},
    }
    text = json.dumps(record, indent=1, default=_json_default) + "\n"
    with atomic_write(run_dir / RECORD, overwrite=True) as tmp:
        tmp.write_text(text)
    for old in run_dir.glob("checkpoint-*.safetensors"):
        if old.name != name and _TENSORS.match(old.name):
            old.unlink(missing_ok=True)
    return run_dir / RECORD


def convert_legacy(run_dir: str | Path) -> Path:
    """Rewrite a trusted run's old ``checkpoint.pt`` as ``checkpoint.json`` + safetensors.

    The old file is read with ``torch.load(weights_only=True)``, PyTorch's unpickler restricted
    to tensors and plain containers (it refuses, and never runs, anything else); nucseg's
    training never reads ``checkpoint.pt`` itself. The old file is left in place.
    """
    run_dir = Path(run_dir)
    path = run_dir / LEGACY
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:  # pickle.UnpicklingError for anything but plain data
        raise ValueError(f"{path}: refused by torch.load(weights_only=True): {err}") from None
    known = {"config", "model", "optimiser", "torch_rng"}
    if not isinstance(saved, dict) or not known <= set(saved):
        raise ValueError(f"{path}: not a nucseg training checkpoint")
    extra = {k: v for k, v in saved.items() if k not in known}
    step = int(extra.get("state", {}).get("step", 0))
    return _write(
        run_dir,
        saved["config"],
        saved["model"],
        saved["optimiser"],
        saved["torch_rng"],
        step=step,
        extra=extra,
    )


def read_record(run_dir: str | Path) -> dict[str, Any]:
    """The ``checkpoint.json`` of ``run_dir`` (without the tensors).

    Raises
    ------
    ValueError
        If the run holds only an old pickle checkpoint, or the record is not valid.
    FileNotFoundError
        If there is no checkpoint.
    """
    run_dir = Path(run_dir)
    if not exists(run_dir):
        if (run_dir / LEGACY).is_file():
            raise ValueError(
                f"{run_dir / LEGACY} is a pickle checkpoint of an older nucseg: it is not read "
                "(unpickling a file can run code); start the run afresh with --overwrite, or, if "
                "you trust it, convert it: python -m nucseg.training.checkpoint RUN_FOLDER"
            )
        raise FileNotFoundError(f"cannot resume: {run_dir / RECORD} does not exist")
    record = read_json(run_dir / RECORD, what="checkpoint")
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ValueError(f"{run_dir / RECORD}: not a nucseg checkpoint record")
    return record


def check_config(run_dir: str | Path, config: Any) -> dict[str, Any]:
    """The checkpoint record of ``run_dir`` if it was written with ``config``, else ValueError."""
    record = read_record(run_dir)
    if not _same_config(record["config"], config):
        changed = sorted(
            k
            for k, v in jsonable(dataclasses.asdict(config)).items()
            if record["config"].get(k, object()) != v
        )
        raise ValueError(
            f"{Path(run_dir) / RECORD} was written with another config (differs in "
            f"{', '.join(changed) or 'its keys'}); resume with the run's config.json or start "
            "afresh with --overwrite"
        )
    return record


def _same_config(saved: dict[str, Any], config: Any) -> bool:
    """Whether a recorded config is ``config``: rebuilt by its class's ``from_dict`` if it has
    one (so fields added since, at their defaults, still match), else compared as JSON."""
    from_dict = getattr(type(config), "from_dict", None)
    if from_dict is None:
        return saved == jsonable(dataclasses.asdict(config))
    try:
        return from_dict(saved) == config
    except (KeyError, TypeError, ValueError):
        return False


def load_checkpoint(
    run_dir: str | Path,
    config: Any,
    model: torch.nn.Module,
    optimiser: torch.optim.Optimizer,
    device: torch.device,
) -> dict[str, Any]:
    """Restore what :func:`write_checkpoint` saved into ``model``, ``optimiser`` and the torch RNG.

    Returns the ``extra`` values (dicts of tensors as state dicts on ``device``) plus ``step``;
    refuses a checkpoint of another config, and one whose tensor file does not match its record.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    run_dir = Path(run_dir)
    record = check_config(run_dir, config)
    path = run_dir / record["tensors"]
    if not path.is_file() or file_sha256(path) != record["tensors_sha256"]:
        raise ValueError(f"{path}: missing or not the tensors {run_dir / RECORD} was written with")
    try:
        tensors = load_file(path, device="cpu")
    except SafetensorError as err:
        raise ValueError(f"{path}: damaged checkpoint ({err})") from None

    def take(prefix: str) -> dict[str, torch.Tensor]:
        start = f"{prefix}/"
        return {k[len(start) :]: v for k, v in tensors.items() if k.startswith(start)}

    model.load_state_dict(take("model"))
    saved = record["optimiser"]
    state = {}
    for index in saved["state_keys"]:
        state[int(index)] = {**saved["state_scalars"][str(index)], **take(f"optimiser/{index}")}
    optimiser.load_state_dict({"state": state, "param_groups": saved["param_groups"]})
    torch.set_rng_state(tensors["rng/torch"])
    out = dict(record["extra"])
    for key in record["tensor_extras"]:
        out[key] = {k: v.to(device) for k, v in take(f"extra/{key}").items()}
    out["step"] = record["step"]
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m nucseg.training.checkpoint RUN...``: convert trusted old checkpoints."""
    import sys

    for run in sys.argv[1:] if argv is None else argv:
        print(convert_legacy(run))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
