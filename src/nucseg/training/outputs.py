"""The run folder's plain files, written atomically: JSON records, history.csv, loss.png."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from nucseg.io import atomic_write


def _write_json(path: Path, obj: Any) -> None:
    with atomic_write(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(obj, indent=1, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple | set):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


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
