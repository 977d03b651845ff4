"""The cases of issue 29's whole-slide matrix (numbered as there), each judged by the rules.

A case is ``(number, name, rule, run)``: ``run(ctx)`` does it in ``ctx``'s folder and returns
``(holds, observed)``. See :mod:`_slide_matrix` for the slides and the harness.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _slide_matrix import Ctx, Done, chunks_done, wait_for

Result = tuple[bool, str]
MODEL_OUTPUTS = ["labels.ome.tif", "nuclei.geojson", "nuclei.parquet", "report.html",
                 "report.json", "thumbnail_overlay.png", "tissue.png"]  # fmt: skip


def clean(d: Done) -> bool:
    """No traceback; every stderr line is a ``nucseg: error:`` or ``nucseg: warning:`` line."""
    return "Traceback" not in d.err and all(x.startswith("nucseg: ") for x in d.lines)


def refused(d: Done, *says: str, code: int = 2) -> Result:
    """One error line naming ``says``, exit ``code``."""
    ok = d.rc == code and clean(d) and len(d.errors) == 1
    ok = ok and all(text in d.errors[0] for text in says)
    return ok, d.shown()


def report(ctx: Ctx, stem: str) -> dict[str, Any]:
    path = ctx.out / stem / "report.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def finished(ctx: Ctx, d: Done, stem: str, *, warns: bool | None = None) -> Result:
    """Exit 0, the six outputs, no temporaries; ``warns``: a warning line is (not) wanted."""
    r = report(ctx, stem)
    ok = d.rc == 0 and clean(d) and ctx.files(stem) == MODEL_OUTPUTS and not ctx.leftovers()
    if warns is not None:
        ok = ok and any(x.startswith("nucseg: warning:") for x in d.lines) == warns
    text = f"{r.get('nuclei')} nuclei, tissue {r.get('tissue_mm2', 0):.4f} mm2; {d.shown()}"
    return ok, text


def nothing_left(ctx: Ctx, stem: str) -> bool:
    return not (ctx.out / stem).exists() and not ctx.leftovers()


def slides_csv(ctx: Ctx) -> list[str]:
    import csv

    with open(ctx.out / "slides.csv", newline="") as fh:
        return [row["status"] for row in csv.DictReader(fh)]


# --- cases -----------------------------------------------------------------------------------


def c01(ctx: Ctx) -> Result:
    d = ctx.slide(ctx.s("truncated.tif"))
    ok, text = refused(d, "truncated.tif", "damaged or truncated")
    return ok and nothing_left(ctx, "truncated") and slides_csv(ctx) == ["failed"], text


def _one(name: str, *says: str, extra: tuple[str, ...] = ()) -> Callable[[Ctx], Result]:
    def run(ctx: Ctx) -> Result:
        d = ctx.slide(ctx.s(name), *extra)
        ok, text = refused(d, *says)
        return ok and nothing_left(ctx, Path(name).stem), text

    return run


def _runs(name: str, *extra: str, stem: str | None = None, warns: bool | None = None) -> Any:
    def run(ctx: Ctx) -> Result:
        d = ctx.slide(ctx.s(name), *extra)
        return finished(ctx, d, stem or Path(name).name.split(".")[0], warns=warns)

    return run


def c05(ctx: Ctx) -> Result:
    d = ctx.slide(ctx.s("jpeg_renamed.svs"), "--mpp", "0.25", "--method", "otsu")
    return d.rc == 0 and clean(d) and ctx.files("jpeg_renamed") == MODEL_OUTPUTS, d.shown()


def c08(ctx: Ctx) -> Result:
    d = ctx.slide(ctx.s("nompp.tif"), "--mpp", "0.25")
    return finished(ctx, d, "nompp")


def c16(ctx: Ctx) -> Result:
    d = ctx.slide(ctx.s("white.tif"))
    ok, text = finished(ctx, d, "white")
    return ok and "no tissue found" in d.err and report(ctx, "white")["nuclei"] == 0, text


def c17(ctx: Ctx) -> Result:
    d = ctx.slide(ctx.s("black.tif"))
    ok, text = finished(ctx, d, "black")
    r = report(ctx, "black")
    return ok and r["tissue_mm2"] == 0 and r["nuclei"] == 0 and "no tissue found" in d.err, text


def c18(ctx: Ctx) -> Result:
    d = ctx.slide(ctx.s("tiny.tif"))
    ok, text = finished(ctx, d, "tiny")
    return ok and report(ctx, "tiny")["nuclei"] > 0, text


def c20(ctx: Ctx) -> Result:
    """good.ome.tif's stem is ``good`` too: it goes to a second output folder."""
    import pandas as pd

    a = ctx.slide(ctx.s("good.tif"))
    plain = ctx.out / "good" / "nuclei.parquet"
    ctx.out = ctx.dir / "out_ome"
    b = ctx.slide(ctx.s("good.ome.tif"))
    ome = ctx.out / "good" / "nuclei.parquet"
    same = a.rc == b.rc == 0 and plain.is_file() and ome.is_file()
    same = same and pd.read_parquet(plain).equals(pd.read_parquet(ome))
    return same and clean(b), f"Parquet identical to good.tif's: {same}; {b.shown()}"


def c21(ctx: Ctx) -> Result:
    ctx.out = ctx.dir / "out dir ü"
    d = ctx.slide(ctx.s("my slide é 日本.tif"))
    return finished(ctx, d, "my slide é 日本")


def c22(ctx: Ctx) -> Result:
    return refused(ctx.slide(ctx.s("dirA/same.tif"), ctx.s("dirB/same.tif")), "share the name")


def c23(ctx: Ctx) -> Result:
    return refused(ctx.slide(ctx.s("good.tif"), ctx.s("good.tif")), "share the name")


def c26(ctx: Ctx) -> Result:
    d = ctx.slide(ctx.s("halfmag.tif"))
    ok, text = finished(ctx, d, "halfmag", warns=True)
    scale = report(ctx, "halfmag").get("quality", {}).get("scale") or {}
    flagged = "wrong magnification" in d.err and scale.get("suggested_mpp") is not None
    return ok and flagged, f"suggested mpp {scale.get('suggested_mpp')}; {text}"


def c28(ctx: Ctx) -> Result:
    d = ctx.nucseg("slide", ctx.s("good.tif"), "--out", str(ctx.slides.parent / "afile" / "o"))
    return refused(d, "--out", "afile is a file")


def c29(ctx: Ctx) -> Result:
    """``--out`` in a read-only folder: tests/test_failures.py's READ_ONLY start-up makes every
    write below it fail with EROFS (as a read-only mount would; root ignores permissions)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_failures import READ_ONLY

    (ctx.dir / "ro").mkdir()
    start = time.perf_counter()
    done = subprocess.run(
        ["nice", "-n", "10", sys.executable, "-c", READ_ONLY, str(ctx.dir / "ro"), "slide",
         ctx.s("good.tif"), "--out", str(ctx.dir / "ro" / "out")],
        capture_output=True, text=True, cwd=ctx.dir,
    )  # fmt: skip
    d = Done([], done.returncode, done.stdout, done.stderr, time.perf_counter() - start)
    return refused(d, "--out", "Read-only file system")


def c30(ctx: Ctx) -> Result:
    first = ctx.slide(ctx.s("good.tif"), "--method", "otsu")
    before = (ctx.out / "slides.csv").read_bytes()
    d = ctx.slide(ctx.s("good.tif"), "--method", "otsu")
    ok, text = refused(d, "nuclei.parquet exists", "--overwrite")
    same = (ctx.out / "slides.csv").read_bytes() == before
    return ok and first.rc == 0 and same, f"slides.csv unchanged: {same}; {text}"


def c31(ctx: Ctx) -> Result:
    def limit() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))

    d = ctx.slide(ctx.s("good.tif"), "--chunk", "512", preexec_fn=limit)
    ok, text = refused(d, "cannot write", "good")
    return ok and not ctx.leftovers() and nothing_left(ctx, "good"), text


def c49(ctx: Ctx, name: str = "model_text") -> Result:
    model = ctx.slides.parent / name
    ok, text = refused(ctx.slide(ctx.s("good.tif"), "--model", str(model)), "model.safetensors")
    return ok and nothing_left(ctx, "good"), text


def c52(ctx: Ctx) -> Result:
    c49(ctx)
    return finished(ctx, ctx.slide(ctx.s("good.tif")), "good")


def c53(ctx: Ctx, *extra: str) -> Result:
    d = ctx.slide(ctx.s("good.tif"), ctx.s("truncated.tif"), ctx.s("good2.tif"), *extra)
    ok, text = refused(d, "truncated.tif")
    statuses = slides_csv(ctx) if (ctx.out / "slides.csv").is_file() else []
    ok = ok and statuses == ["ok", "failed", "ok"] and nothing_left(ctx, "truncated")
    return ok, f"slides.csv {statuses}; {text}"


def c59(ctx: Ctx) -> Result:
    """kill -9 after 8 chunks (watched on disk); a plain rerun refused, pointing to --resume."""
    process = ctx.start(ctx.s("good.tif"), "--chunk", "256")
    wait_for(lambda: chunks_done(ctx, "good") >= 8, process)
    process.kill()
    process.communicate()
    d = ctx.slide(ctx.s("good.tif"), "--chunk", "256")
    ok, text = refused(d, "unfinished run", "--resume")
    return ok and not ctx.leftovers(), f"{chunks_done(ctx, 'good')} chunks kept; {text}"


_REFERENCE: dict[str, bytes] = {}


def _reference(ctx: Ctx) -> bytes:
    """The GeoJSON of an uninterrupted run with ``--chunk 256`` (made once)."""
    if "geojson" not in _REFERENCE:
        ref = Ctx(ctx.dir, ctx.slides, 0)
        ref.slide(ctx.s("good.tif"), "--chunk", "256")
        _REFERENCE["geojson"] = (ref.out / "good" / "nuclei.geojson").read_bytes()
    return _REFERENCE["geojson"]


def c60(ctx: Ctx) -> Result:
    c59(ctx)
    return refused(ctx.slide(ctx.s("good.tif"), "--chunk", "512", "--resume"), "other settings")


def c61(ctx: Ctx) -> Result:
    c59(ctx)
    d = ctx.slide(ctx.s("good.tif"), "--chunk", "256", "--resume")
    ok, text = finished(ctx, d, "good")
    same = ok and (ctx.out / "good" / "nuclei.geojson").read_bytes() == _reference(ctx)
    return same, f"resumed {report(ctx, 'good').get('chunks_resumed')} chunks, identical " \
        f"GeoJSON: {same}; {text}"  # fmt: skip


def _signal_after(ctx: Ctx, sig: int, code: int, word: str) -> Result:
    process = ctx.start(ctx.s("good.tif"), "--chunk", "256")
    wait_for(lambda: chunks_done(ctx, "good") >= 5, process)
    process.send_signal(sig)
    _, err = process.communicate()
    first = Done([], process.returncode, "", err, 0)
    ok = first.rc == code and len(first.errors) == 1 and word in err and "--resume" in err
    d = ctx.slide(ctx.s("good.tif"), "--chunk", "256", "--resume")
    ok2, text = finished(ctx, d, "good")
    same = ok2 and (ctx.out / "good" / "nuclei.geojson").read_bytes() == _reference(ctx)
    return ok and same, f"{first.shown()}; then --resume: identical GeoJSON {same}"


def c64(ctx: Ctx) -> Result:
    """SIGINT as soon as the first final file appears (the outputs being written)."""
    process = ctx.start(ctx.s("good.tif"), "--chunk", "256")
    wait_for(lambda: (ctx.out / "good" / "nuclei.parquet").exists(), process)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate()
    first = Done([], process.returncode, "", err, 0)
    files = ctx.files("good")
    plain = ctx.slide(ctx.s("good.tif"), "--chunk", "256")
    d = ctx.slide(ctx.s("good.tif"), "--chunk", "256", "--resume")
    ok, text = finished(ctx, d, "good")
    if first.rc == 0:
        return ok, f"the run ended before the signal (not exercised); {text}"
    hint = "--resume" in plain.err or "--resume" in err
    return ok and hint, f"{first.shown()} leaving {len(files)} entries; plain rerun: " \
        f"{plain.shown()}; --resume: {text}"  # fmt: skip


def c65(ctx: Ctx) -> Result:
    from _slide_matrix import _command

    process = subprocess.Popen(
        _command("segment", str(ctx.slides.parent / "images6"), "--out", str(ctx.out),
                 "--method", "fiji"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    process.stdout.readline()
    process.send_signal(signal.SIGINT)
    _, err = process.communicate()
    stems: dict[str, int] = {}
    for path in ctx.out.iterdir():
        stems[path.name.split("_")[0]] = stems.get(path.name.split("_")[0], 0) + 1
    ok = process.returncode == 130 and all(n == 4 for n in stems.values()) and not ctx.leftovers()
    return ok, f"exit {process.returncode}: {err.strip()[:120]}; images with 4 files: {len(stems)}"


def _concurrent(ctx: Ctx, *second: str) -> Result:
    first = ctx.start(ctx.s("good.tif"), "--chunk", "256")
    wait_for(lambda: (ctx.out / ".nucseg-lock").exists(), first)
    d = ctx.slide(ctx.s("good.tif"), "--chunk", "256", *second)
    first.communicate()
    ok, text = refused(d, "another nucseg run")
    ok = ok and first.returncode == 0 and ctx.files("good") == MODEL_OUTPUTS
    return ok, f"first run exit {first.returncode}; second: {text}"


def c54(ctx: Ctx) -> Result:
    return c53(ctx, "--workers", "2")


def c57(ctx: Ctx) -> Result:
    return refused(ctx.slide(ctx.s("good.tif"), "--scheduler", "tcp://127.0.0.1:9"), "Timed out")


GEO = "broken.geojson"
M = ("--method", "otsu")
CASES: list[tuple[int, str, str, Callable[[Ctx], Result]]] = [
    (1, "truncated TIFF slide", "one line naming the file, exit 2, no leftovers", c01),
    (2, "0-byte .tif", "one line, exit 2", _one("empty.tif", "empty.tif")),
    (3, "random bytes named .svs", "one line, exit 2", _one("garbage.svs", "garbage.svs")),
    (4, "JPEG renamed .svs", "refused with a reason", _one("jpeg_renamed.svs", "--mpp")),
    (5, "same JPEG with --mpp 0.25 --method otsu", "read as an image", c05),
    (6, "a folder passed as the slide", "is a folder", _one("a_directory.svs", "is a folder")),
    (7, "pyramid without resolution tags", "one line asking for --mpp", _one("nompp.tif", "--mpp")),
    (8, "same with --mpp 0.25", "the same result as good.tif", c08),
    (
        9,
        "file says 0.0001 um/px",
        "refused unless forced",
        _one("mpp0.tif", "0.0001", "--force-mpp"),
    ),
    (
        10,
        "file says 1000 um/px",
        "refused unless forced",
        _one("mpp1000.tif", "1000", "--force-mpp"),
    ),
    (
        11,
        "--mpp 1000",
        "refused unless forced",
        _one("good.tif", "--mpp 1000", "--force-mpp", extra=("--mpp", "1000")),
    ),
    (12, "--mpp 0", "one line", _one("good.tif", "--mpp 0", extra=("--mpp", "0"))),
    (13, "--mpp -0.25", "one line", _one("good.tif", "--mpp -0.25", extra=("--mpp", "-0.25"))),
    (14, "--mpp nan", "one line", _one("good.tif", "--mpp nan", extra=("--mpp", "nan"))),
    (15, "--mpp inf", "one line", _one("good.tif", "--mpp inf", extra=("--mpp", "inf"))),
    (16, "all-white slide", "exit 0, 0 nuclei, a no-tissue warning", c16),
    (17, "all-black slide", "no tissue (0 mm2), a no-tissue warning", c17),
    (18, "tiny slide, 100 x 100 px of tissue", "its nuclei", c18),
    (19, "thin slide, 64 x 12,000 px", "a correct result", _runs("thin.tif")),
    (20, "OME-TIFF with PhysicalSizeX/Y", "the same as the plain TIFF", c20),
    (21, "spaces and unicode in slide and --out", "works", c21),
    (22, "two slides with one stem", "refused before work", c22),
    (23, "the same slide twice", "refused before work", c23),
    (24, "greyscale pyramid", "runs, stain warning as a nucseg: warning: line", _runs("gray.tif")),
    (25, "16-bit RGB pyramid", "same as 8-bit", _runs("u16.tif")),
    (26, "20x pixels labelled 0.25 um/px", "a wrong-magnification flag with a suggested mpp", c26),
    (27, "R and B swapped", "a stain warning", _runs("bgr.tif", warns=True)),
    (28, "--out below a file", "one line: is a file", c28),
    (29, "--out on a read-only file system", "one line naming the folder", c29),
    (30, "rerun over a finished slide", "refused; slides.csv row unchanged", c30),
    (31, "disk full (ulimit -f 300 kB)", "one line naming file and cause, no temporaries", c31),
    (
        32,
        "--tile 100",
        "refused before the model loads",
        _one("good.tif", "--tile 100", "multiple of 32", extra=("--tile", "100")),
    ),
    (33, "--tile 0", "one line", _one("good.tif", "--tile", extra=("--tile", "0"))),
    (34, "--tile 65536", "refused", _one("good.tif", "--tile 65536", extra=("--tile", "65536"))),
    (35, "--chunk 0", "one line", _one("good.tif", "--chunk", extra=("--chunk", "0"))),
    (36, "--halo -5", "one line", _one("good.tif", "--halo", extra=("--halo", "-5"))),
    (37, "--overlap 2", "one line", _one("good.tif", "--overlap", extra=("--overlap", "2"))),
    (
        38,
        "--batch-size 0",
        "one line naming the option",
        _one("good.tif", "--batch-size 0", extra=("--batch-size", "0")),
    ),
    (
        39,
        "--roi outside the slide",
        "ROI outside the slide",
        _one("good.tif", "outside the slide", extra=("--roi", "100000,100000,500,500")),
    ),
    (
        41,
        "--roi-geojson holding a Point",
        "one line",
        _one("good.tif", "point.geojson", extra=("--roi-geojson", "../../point.geojson")),
    ),
    (
        42,
        "--roi-geojson not JSON",
        "one line",
        _one("good.tif", GEO, extra=("--roi-geojson", "../../" + GEO)),
    ),
    (
        43,
        "--roi-geojson missing",
        "one line",
        _one("good.tif", "nosuch.geojson", extra=("--roi-geojson", "nosuch.geojson")),
    ),
    (
        47,
        "--method otsu --model default",
        "one line",
        _one("good.tif", "not both", extra=("--method", "otsu", "--model", "default")),
    ),
    (48, "--method magic", "one line", _one("good.tif", "magic", extra=("--method", "magic"))),
    (49, "model.safetensors a text file", "one line, nothing left", c49),
    (50, "truncated model.safetensors", "one line, nothing left", lambda c: c49(c, "model_trunc")),
    (
        51,
        "unknown model name",
        "one line",
        _one("good.tif", "nosuchmodel", extra=("--model", "nosuchmodel")),
    ),
    (52, "rerun with the right model after 49", "runs", c52),
    (53, "cohort of 3, the middle one truncated", "the others finish, exit 2", c53),
    (54, "same cohort on Dask (--workers 2)", "the same; one line per problem", c54),
    (55, "--workers 0", "one line", _one("good.tif", "--workers", extra=("--workers", "0"))),
    (56, "--workers -2", "one line", _one("good.tif", "--workers", extra=("--workers", "-2"))),
    (57, "--scheduler with nothing listening", "one line", c57),
    (
        58,
        "--scheduler-file missing",
        "one line",
        _one("good.tif", "nosuch.json", extra=("--scheduler-file", "nosuch.json")),
    ),
    (59, "kill -9 after 8 chunks, plain rerun", "refused, pointing to --resume", c59),
    (60, "--resume with other settings", "refused", c60),
    (61, "--resume after kill -9", "the uninterrupted result", c61),
    (
        62,
        "Ctrl-C after 5 chunks, then --resume",
        "exit 130, one line; the same result",
        lambda c: _signal_after(c, signal.SIGINT, 130, "interrupted"),
    ),
    (
        63,
        "SIGTERM after 5 chunks, then --resume",
        "exit 143, one line; the same result",
        lambda c: _signal_after(c, signal.SIGTERM, 143, "terminated"),
    ),
    (64, "Ctrl-C while the outputs are written", "--resume finishes them (hinted)", c64),
    (65, "Ctrl-C during segment of 6 images", "exit 130, complete sets only", c65),
    (
        66,
        "a second identical run into one --out",
        "refused at once (locked)",
        lambda c: _concurrent(c),
    ),
    (
        67,
        "a --resume run started during another",
        "refused at once (locked)",
        lambda c: _concurrent(c, "--resume"),
    ),
]
SEGMENT = [  # rows 40, 44-46: options of the parser and of segment
    (40, "--roi 1,2,3", ("slide", "good.tif", "--roi", "1,2,3"), ("--roi",)),
    (44, "segment --param foo=1", ("segment", "CROP", "--param", "foo=1"), ("foo",)),
    (45, "segment --param tile=abc", ("segment", "CROP", "--param", "tile=abc"), ("tile",)),
    (46, "segment --method fiji --param sigma=banana",
     ("segment", "CROP", "--method", "fiji", "--param", "sigma=banana"), ("sigma", "number")),
]  # fmt: skip


def segment_case(argv: tuple[str, ...], says: tuple[str, ...]) -> Callable[[Ctx], Result]:
    def run(ctx: Ctx) -> Result:
        crop = ctx.slides.parent / "images6" / "img0.png"
        args = [str(crop) if a == "CROP" else ctx.s(a) if a.endswith(".tif") else a for a in argv]
        d = ctx.nucseg(*args, "--out", str(ctx.out))
        code = 2
        ok = d.rc == code and all(t in d.err for t in says) and "Traceback" not in d.err
        return ok, d.shown()

    return run


CASES += [(n, name, "one line, exit 2", segment_case(argv, says))
          for n, name, argv, says in SEGMENT]  # fmt: skip
CASES.sort(key=lambda case: case[0])
