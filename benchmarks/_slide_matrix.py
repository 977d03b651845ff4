"""The 67 cases of issue 29's whole-slide matrix, on small slides, with the verdict of the rules.

Used by ``python benchmarks/failure_matrix.py --slides OUT.md``. The slides are those of the
issue's matrix (``shared/tools/make_matrix_slides.py``) made smaller: one MoNuSeg field (1000 x
1000 pixels) on glass in a 1280 x 1280 pyramid at 0.25 um/px instead of four in 2304 x 2304,
and the same damaged, mislabelled and odd variants (:func:`make_slides`). Each case runs one or
more ``nucseg`` commands in its own folder and is judged by what docs/failures.md's rules say a
user must see (:class:`Row`); the interruption cases watch the run's files, not the clock.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "src" / "nucseg" / "data" / "models" / "default"
TIMEOUT_S = 300


@dataclasses.dataclass
class Done:
    """What a command did: exit status, output, seconds."""

    argv: list[str]
    rc: int
    out: str
    err: str
    seconds: float

    @property
    def lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]

    @property
    def errors(self) -> list[str]:
        return [line for line in self.lines if line.startswith("nucseg: error:")]

    def shown(self) -> str:
        """The first error line, else the first warning, else the last line of the table."""
        first = self.errors or [x for x in self.lines if x.startswith("nucseg: warning:")]
        if "Traceback" in self.err:
            first = ["traceback: " + self.lines[-1]]
        last = (self.lines or self.out.strip().splitlines() or ["(nothing printed)"])[-1]
        text = first[0] if first else last
        more = f" (+{len(self.lines) - 1} more lines)" if len(self.lines) > 1 else ""
        return f"exit {self.rc}, {self.seconds:.0f} s: {text[:300]}{more}"


class Ctx:
    """A case's folder (``out`` inside it) and the shared slides."""

    def __init__(self, work: Path, slides: Path, number: int) -> None:
        self.dir = work / "runs" / f"{number:02d}"
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        self.slides, self.out = slides, self.dir / "out"

    def s(self, name: str) -> str:
        return str(self.slides / name)

    def nucseg(self, *argv: str, **popen: Any) -> Done:
        start = time.perf_counter()
        try:
            done = subprocess.run(_command(*argv), capture_output=True, text=True,
                                  timeout=TIMEOUT_S, cwd=self.dir, **popen)  # fmt: skip
        except subprocess.TimeoutExpired:
            return Done(list(argv), -1, "", f"still running after {TIMEOUT_S} s", TIMEOUT_S)
        return Done(list(argv), done.returncode, done.stdout, done.stderr,
                    time.perf_counter() - start)  # fmt: skip

    def slide(self, *argv: str, **popen: Any) -> Done:
        return self.nucseg("slide", *argv, "--out", str(self.out), "--no-progress", **popen)

    def start(self, *argv: str) -> subprocess.Popen:
        return subprocess.Popen(
            _command("slide", *argv, "--out", str(self.out), "--no-progress"),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=self.dir,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )  # fmt: skip

    def files(self, stem: str) -> list[str]:
        folder = self.out / stem
        return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []

    def leftovers(self) -> list[str]:
        return [str(p) for p in self.dir.rglob("*") if "nucseg-tmp" in p.name or ".tmp" in p.name]


def _command(*argv: str) -> list[str]:
    return ["nice", "-n", "10", sys.executable, "-m", "nucseg", *argv]


def wait_for(condition: Callable[[], bool], process: subprocess.Popen) -> bool:
    """Poll ``condition`` until it holds (True) or ``process`` ends (False)."""
    while process.poll() is None:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def chunks_done(ctx: Ctx, stem: str) -> int:
    return len(list((ctx.out / stem / "chunks").glob("r*_c*.parquet")))


# --- slides --------------------------------------------------------------------------------


def _pyramid(path: Path, image: np.ndarray, *, mpp: float | None = 0.25, ome: bool = False) -> None:
    """A zlib-tiled slide, SubIFD levels halved down to 600 pixels a side (``ome``: OME-TIFF)."""
    from nucseg.slide.synthetic import write_slide

    levels = 1 + max(0, math.ceil(math.log2(min(image.shape[:2]) / 600)))
    write_slide(path, image.shape[:2], image, mpp=mpp, flavour="ome" if ome else "subifd",
                levels=levels, compression="zlib")  # fmt: skip


def make_slides(folder: Path, data: Path) -> Path:
    """Write the matrix's slides and broken model folders into ``folder``; returns its slides/."""
    import tifffile
    from PIL import Image

    slides = folder / "slides"
    slides.mkdir(parents=True, exist_ok=True)
    fields = sorted((data / "monuseg" / "images").glob("*.tif"))[:2]
    field = tifffile.imread(fields[0])[..., :3]
    base = np.full((1280, 1280, 3), 242, np.uint8)
    base[140:1140, 140:1140] = field
    s = slides
    _pyramid(s / "good.tif", base)
    _pyramid(s / "good2.tif", base[:, ::-1].copy())
    _pyramid(s / "good.ome.tif", base, ome=True)
    _pyramid(s / "nompp.tif", base, mpp=None)
    _pyramid(s / "mpp0.tif", base, mpp=0.0001)
    _pyramid(s / "mpp1000.tif", base, mpp=1000)
    _pyramid(s / "white.tif", np.full((1024, 1024, 3), 255, np.uint8))
    _pyramid(s / "black.tif", np.zeros((1024, 1024, 3), np.uint8))
    _pyramid(s / "tiny.tif", base[140:240, 140:240].copy())
    thin = np.full((64, 12000, 3), 242, np.uint8)
    for i in range(0, 12000, 1000):
        thin[:, i : i + 1000] = field[i // 1000 * 64 % 900 :][:64]
    _pyramid(s / "thin.tif", thin)
    data_bytes = (s / "good.tif").read_bytes()
    (s / "truncated.tif").write_bytes(data_bytes[: len(data_bytes) // 2])
    (s / "garbage.svs").write_bytes(np.random.default_rng(0).bytes(100_000))
    Image.fromarray(base[:1024, :1024]).save(s / "jpeg_renamed.svs", format="JPEG")
    (s / "a_directory.svs").mkdir(exist_ok=True)
    shutil.copy(s / "good.tif", s / "my slide é 日本.tif")
    (s / "empty.tif").write_bytes(b"")
    _pyramid(s / "gray.tif", base[..., 0].copy())
    _pyramid(s / "u16.tif", base.astype(np.uint16) * 257)
    _pyramid(s / "halfmag.tif", base[::2, ::2].copy())  # 0.5 um/px pixels labelled 0.25
    _pyramid(s / "bgr.tif", base[..., ::-1].copy())
    for sub, name in (("dirA", "good.tif"), ("dirB", "good2.tif")):
        (s / sub).mkdir(exist_ok=True)
        shutil.copy(s / name, s / sub / "same.tif")
    for name in ("model_text", "model_trunc"):
        shutil.copytree(BUNDLED, folder / name, dirs_exist_ok=True)
    (folder / "model_text" / "model.safetensors").write_text("this is not a safetensors file\n")
    weights = (BUNDLED / "model.safetensors").read_bytes()
    (folder / "model_trunc" / "model.safetensors").write_bytes(weights[: len(weights) // 3])
    (folder / "broken.geojson").write_text("not json")
    (folder / "point.geojson").write_text(
        '{"type": "Feature", "geometry": {"type": "Point", "coordinates": [1, 2]}}'
    )
    (folder / "afile").write_text("x")
    images = folder / "images6"
    images.mkdir(exist_ok=True)
    crop = ROOT / "examples" / "monuseg-breast-crop" / "images" / "TCGA-A7-A13E-crop.png"
    for i in range(6):
        shutil.copy(crop, images / f"img{i}.png")
    return slides
