"""The whole-slide and cohort cases of :data:`test_failures.CASES` (issue 29).

Small synthetic slides (:func:`disk_slide`), the Otsu method where the network is not the point,
and the bundled model where an option of the network is checked (refused before it loads). Each
case is one command that must end with one ``nucseg: error:`` line naming the file or option,
exit status 2, no temporary left, every file present before unchanged; ``check`` adds what the
rules of docs/failures.md say beyond that (the other slides of a batch finished, nothing left of
a failed start, ...).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

OTSU = ["--method", "otsu", "--no-progress"]


def disk_pixels(size: int, seed: int) -> np.ndarray:
    """``(size, size, 3) uint8``: pink tissue with dark disks of radius 8 at seeded places."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:size, :size]
    image = np.empty((size, size, 3), dtype=np.uint8)
    image[:] = (225, 170, 215)
    for r, c in rng.integers(12, size - 12, (size * size // 4000, 2)):
        image[(rows - r) ** 2 + (cols - c) ** 2 <= 64] = (60, 30, 120)
    return image


def disk_slide(path: Path, *, size: int = 512, mpp: float | None = 0.25, seed: int = 0) -> Path:
    """A tiled pyramidal TIFF that OpenSlide opens (SubIFD levels, resolution tags): pink
    tissue with dark disks."""
    from nucseg.slide.synthetic import write_slide

    path.parent.mkdir(parents=True, exist_ok=True)
    return write_slide(path, (size, size), disk_pixels(size, seed), mpp=mpp, flavour="subifd",
                       levels=2, compression="zlib")  # fmt: skip


def truncated_slide(path: Path) -> Path:
    """The first half of a :func:`disk_slide` of 1024 pixels: OpenSlide opens it, and fails
    reading its tiles (``OpenSlideError``)."""
    disk_slide(path, size=1024)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def _slides(tmp: Path, *names: str) -> list[str]:
    return [str(disk_slide(tmp / "in" / name, seed=k)) for k, name in enumerate(names)]


def _batch_with_a_damaged_slide(tmp: Path, *extra: str) -> list[str]:
    a, c = _slides(tmp, "a.tif", "c.tif")
    b = truncated_slide(tmp / "in" / "b.tif")
    return ["slide", a, str(b), c, "--out", str(tmp / "out"), *OTSU, *extra]


def _others_finished(tmp: Path, done: subprocess.CompletedProcess) -> None:
    assert (tmp / "out" / "slides.csv").is_file(), "no slides.csv"
    summary = pd.read_csv(tmp / "out" / "slides.csv")
    assert summary["status"].tolist() == ["ok", "failed", "ok"], summary["status"].tolist()
    assert "b.tif" in summary["error"][1]
    for stem in ("a", "c"):
        assert (tmp / "out" / stem / "report.json").is_file()
    assert not (tmp / "out" / "b").exists(), "out/b left"  # a failed start leaves nothing
    assert not (tmp / "out" / ".nucseg-lock").exists()


def _nothing_of(stem: str) -> Callable[[Path, subprocess.CompletedProcess], None]:
    def check(tmp: Path, done: subprocess.CompletedProcess) -> None:
        left = sorted(p.name for p in (tmp / "out" / stem).rglob("*"))
        assert not (tmp / "out" / stem).exists(), f"out/{stem} holds {left}"[:120]
        assert not (tmp / "out" / ".nucseg-lock").exists()

    return check


def _finished_run(tmp: Path) -> list[str]:
    """A finished run in ``out``; the same command again (which must be refused)."""
    argv = ["slide", *_slides(tmp, "a.tif"), "--out", str(tmp / "out"), *OTSU]
    subprocess.run([sys.executable, "-m", "nucseg", *argv], check=True, capture_output=True)
    return argv


def _held_folder(tmp: Path) -> list[str]:
    """``out`` locked by a live process of this host (the one running the test)."""
    (tmp / "out").mkdir()
    holder = f'{{"pid": {os.getpid()}, "host": "{socket.gethostname()}", "started": "now"}}\n'
    (tmp / "out" / ".nucseg-lock").write_text(holder)
    return ["slide", *_slides(tmp, "a.tif"), "--out", str(tmp / "out"), *OTSU]


def _text_model(tmp: Path, bundled: Path) -> Path:
    import shutil

    shutil.copytree(bundled, tmp / "model")
    (tmp / "model" / "model.safetensors").write_text("this is not a safetensors file\n")
    return tmp / "model"


def slide_cases(case: Any, bundled: Path) -> list[Any]:
    """The cases, as instances of ``case`` (:class:`test_failures.Case`)."""

    def slide(tmp: Path, *extra: str, name: str = "a.tif", mpp: float | None = 0.25) -> list[str]:
        path = disk_slide(tmp / "in" / name, mpp=mpp)
        return ["slide", str(path), "--out", str(tmp / "out"), *extra]

    huge = "not run: grew to 14-17 GB of memory in a minute (issue 29, row 34)"
    endless = "not run: still working after 90 s at 2.3 GB (issue 29, rows 10-11)"
    return [
        case("a damaged slide in a batch", _batch_with_a_damaged_slide,
             says=("b.tif", "damaged or truncated"), check=_others_finished),
        case("a damaged slide in a batch on Dask", lambda t: _batch_with_a_damaged_slide(
             t, "--workers", "1"), says=("b.tif",), check=_others_finished),
        case("a file claiming 0.0001 um/px", lambda t: slide(t, *OTSU, mpp=0.0001),
             says=("a.tif", "0.0001", "--force-mpp"), check=_nothing_of("a")),
        case("a file claiming 1000 um/px", lambda t: slide(t, *OTSU, mpp=1000), before=endless,
             says=("a.tif", "1000", "--force-mpp"), check=_nothing_of("a")),
        case("slide --mpp inf", lambda t: slide(t, *OTSU, "--mpp", "inf"), says=("--mpp inf",)),
        case("slide --mpp 1000", lambda t: slide(t, *OTSU, "--mpp", "1000"), before=endless,
             says=("--mpp 1000", "--force-mpp")),
        case("segment --mpp 0.001", lambda t: ["segment", str(disk_slide(t / "a.tif")), "--out",
             str(t / "out"), *OTSU[:2], "--mpp", "0.001"], says=("--mpp 0.001", "--force-mpp")),
        case("slide --tile 100", lambda t: slide(t, "--tile", "100", "--no-progress"),
             says=("--tile 100", "multiple of 32")),
        case("slide --tile 65536", lambda t: slide(t, "--tile", "65536", "--no-progress"),
             before=huge, says=("--tile 65536", "2048")),
        case("slide --batch-size 0", lambda t: slide(t, "--batch-size", "0", "--no-progress"),
             says=("--batch-size 0", "from 1")),
        case("segment --method fiji --param sigma=banana", lambda t: ["segment", str(
             disk_slide(t / "a.tif")), "--out", str(t / "out"), "--method", "fiji", "--param",
             "sigma=banana"], says=("sigma", "number")),
        case("an ROI outside the slide", lambda t: slide(
             t, *OTSU, "--roi", "100000,100000,500,500"),
             says=("a.tif", "outside the slide"), check=_nothing_of("a")),
        case("a folder given as the slide", lambda t: (t / "a.svs").mkdir() or [
             "slide", str(t / "a.svs"), "--out", str(t / "out"), *OTSU],
             says=("a.svs", "is a folder")),
        case("slide --out below a file", lambda t: (t / "afile").write_text("x") and slide(
             t, *OTSU)[:2] + ["--out", str(t / "afile" / "out"), *OTSU],
             says=("--out", "afile is a file")),
        case("slide --out on a read-only file system", lambda t: slide(t, *OTSU)[:2] + [
             "--out", str(t / "ro" / "out"), *OTSU], read_only="ro",
             says=("--out", "Read-only file system")),
        case("a rerun over a finished slide without --overwrite", _finished_run,
             says=("nuclei.parquet exists", "--overwrite")),
        case("an output folder another run is writing", _held_folder,
             says=("another nucseg run", ".nucseg-lock")),
        case("a broken model for a slide", lambda t: slide(t, "--model", str(
             _text_model(t, bundled)), "--no-progress"), says=("model.safetensors",),
             check=_nothing_of("a")),
        case("disk full while a chunk is written", lambda t: slide(
             t, *OTSU, "--chunk", "256"), file_size_limit=60_000,
             says=("cannot write", ".npy"), check=_nothing_of("a")),
    ]  # fmt: skip
