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
