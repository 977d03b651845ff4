"""One timer of ``nucseg segment`` for the benchmarks that measure it (bench_segment,
bench_segment_compare, bench_slide): the same command, the same clock, the same output folder."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_segment(
    images: list[Path] | list[str], extra: list[str], *, src: Path | None = None
) -> float:
    """Wall-clock seconds of one ``nucseg segment`` run over ``images`` into a temporary folder,
    start-up included; ``src``: the package of another checkout (its ``src`` on PYTHONPATH)."""
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "nucseg.cli", "segment", *map(str, images), "--out", out]
        start = time.perf_counter()
        subprocess.run(command + extra, check=True, capture_output=True, env=env)
        return time.perf_counter() - start


MIN_REPEATS = 3


def ratio_spread(numerators: list[float], denominators: list[float]) -> dict[str, object]:
    """A speed ratio as it may be quoted: one ratio per repeat (``numerators[k] /
    denominators[k]``, both sides timed back to back in repeat ``k``), their median and their
    range. Refuses fewer than :data:`MIN_REPEATS` repeats: a single pair overstates precision.

    >>> ratio_spread([2.0, 3.0, 2.2], [1.0, 1.0, 1.0])["median"]
    2.2
    """
    if len(numerators) != len(denominators) or len(numerators) < MIN_REPEATS:
        raise ValueError(f"a ratio needs at least {MIN_REPEATS} interleaved repeats of both sides")
    ratios = [a / b for a, b in zip(numerators, denominators, strict=True)]
    import statistics

    return {"per_repeat": ratios, "median": statistics.median(ratios), "min": min(ratios),
            "max": max(ratios), "repeats": len(ratios)}  # fmt: skip
