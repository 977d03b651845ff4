"""Bad inputs and interruptions, through the command line in a subprocess (issue 18).

Every case in :data:`CASES` runs ``python -m nucseg ...`` and must end with its exit code, one
line per failure starting ``nucseg: error:`` and naming the file or option, no traceback, no
temporary file left anywhere, every file that existed before unchanged, and no code run from a
file (the malicious pickles below create ``MARKER`` when unpickled).
``benchmarks/failure_matrix.py`` runs the same cases against another checkout for the
before/after table in docs/failures.md.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from slide_cases import slide_cases

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_IMAGE = ROOT / "examples" / "monuseg-breast-crop" / "images" / "TCGA-A7-A13E-crop.png"
EXAMPLE_LABELS = ROOT / "examples" / "monuseg-breast-crop" / "labels" / "TCGA-A7-A13E-crop.png"
BUNDLED = ROOT / "src" / "nucseg" / "data" / "models" / "default"
MARKER = "MARKER"

#: Run before ``nucseg.cli.main`` to make the folder given as first argument read-only (as a
#: read-only mount would: the tests may run as root, for whom permission bits do not count).
READ_ONLY = """
import builtins, errno, io, os, sys
ro = os.path.abspath(sys.argv.pop(1))
def guard(path):
    if os.path.abspath(os.fsdecode(path)).startswith(ro):
        raise OSError(errno.EROFS, "Read-only file system", os.fsdecode(path))
real_open, real_os_open, real_mkdir = builtins.open, os.open, os.mkdir
def fake_open(file, mode="r", *args, **kwargs):
    if isinstance(file, (str, bytes, os.PathLike)) and set(mode) & set("wax+"):
        guard(file)
    return real_open(file, mode, *args, **kwargs)
def fake_os_open(path, flags, *args, **kwargs):
    if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
        guard(path)
    return real_os_open(path, flags, *args, **kwargs)
def fake_mkdir(path, *args, **kwargs):
    guard(path)
    return real_mkdir(path, *args, **kwargs)
builtins.open = io.open = fake_open
os.open, os.mkdir = fake_os_open, fake_mkdir
from nucseg.cli import main
sys.exit(main())
"""


class _Evil:
    """Unpickling this creates a folder: proof that a file's code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def evil_pickle(tmp: Path) -> bytes:
    return pickle.dumps({"model": _Evil(tmp / MARKER)})


def evil_torch_file(tmp: Path, path: Path) -> None:
    import torch

    torch.save({"config": {}, "model": _Evil(tmp / MARKER)}, path)


# --- the set-ups: each makes its files under tmp and returns the arguments after `nucseg` ----


def _image(tmp: Path, name: str = "a.png") -> Path:
    folder = tmp / "in"
    folder.mkdir(exist_ok=True)
    shutil.copy(EXAMPLE_IMAGE, folder / name)
    return folder / name


def _truncated_tiff(path: Path) -> Path:
    import tifffile

    tifffile.imwrite(path, np.zeros((64, 64, 3), np.uint8))
    path.write_bytes(path.read_bytes()[:8])  # the header only
    return path


def _model(tmp: Path, weights: bytes | None = None, **files: bytes) -> Path:
    folder = tmp / "model"
    shutil.copytree(BUNDLED, folder)
    if weights is not None:
        (folder / "model.safetensors").write_bytes(weights)
    for name, data in files.items():
        (folder / name.replace("_", ".")).write_bytes(data)
    return folder


def _truncated_weights() -> bytes:
    return (BUNDLED / "model.safetensors").read_bytes()[:100_000]


def _folder_dataset(tmp: Path, labels: dict[str, bytes]) -> Path:
    folder = tmp / "data"
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    shutil.copy(EXAMPLE_IMAGE, folder / "images" / "a.png")
    for name, data in labels.items():
        (folder / "labels" / name).write_bytes(data)
    return folder


def _run_folder(tmp: Path, *, steps: int) -> tuple[Path, Path]:
    """A run folder whose checkpoint record holds a config of ``steps`` steps, and a config file
    of one more step (what a user editing the config between runs would pass)."""
    from nucseg.train import TrainConfig

    run = tmp / "run"
    run.mkdir()
    values = dataclasses.asdict(TrainConfig(steps=steps))
    (run / "config.json").write_text(json.dumps(values, indent=1))
    record = {"format": "nucseg.checkpoint/1", "step": 1, "config": values}
    (run / "checkpoint.json").write_text(json.dumps(record))
    other = tmp / "other.json"
    other.write_text(json.dumps({"steps": steps + 1, "limit_images": 2, "val_images": 0}))
    return run, other


@dataclasses.dataclass(frozen=True)
class Case:
    """One bad input: ``setup(tmp) -> argv``, and what the command must say and return."""

    name: str
    setup: Callable[[Path], list[str]]
    says: tuple[str, ...] = ()
    not_says: tuple[str, ...] = ()
    code: int = 2
    lines: int = 1  # `nucseg: error:` lines (`nucseg: warning:` lines may come beside them)
    read_only: str | None = None  # a folder (relative to tmp) made read-only by READ_ONLY
    file_size_limit: int | None = None  # bytes: RLIMIT_FSIZE of the command (a full disk)
    check: Callable[[Path, subprocess.CompletedProcess], None] | None = None  # more checks
    before: str | None = None  # benchmarks/failure_matrix.py: why the older version is not run


def _otsu(*argv: str) -> list[str]:
    return [*argv, "--method", "otsu"]


CASES = [
    Case(
        "--out below a file",
        lambda t: _otsu("segment", str(_image(t)), "--out", str(t / "in" / "a.png" / "out")),
        says=("--out", "a.png is a file"),
    ),
    Case(
        "--out on a read-only file system",
        lambda t: _otsu("segment", str(_image(t)), "--out", str(t / "ro" / "out")),
        says=("--out", "Read-only file system"),
        read_only="ro",
    ),
    Case(
        "--out naming an existing file, with --overwrite",
        lambda t: (
            (t / "file.txt").write_text("x")
            and _otsu("segment", str(_image(t)), "--out", str(t / "file.txt"), "--overwrite")
        ),
        says=("--out", "file.txt is a file"),
        not_says=("pass --overwrite",),
    ),
    Case(
        "an output name that is a folder, with --overwrite",
        lambda t: (
            (t / "out" / "a_labels.tif").mkdir(parents=True)
            or _otsu("segment", str(_image(t)), "--out", str(t / "out"), "--overwrite")
        ),
        says=("a_labels.tif is a folder",),
    ),
    Case(
        "a truncated model.safetensors",
        lambda t: [
            "segment",
            str(_image(t)),
            "--out",
            str(t / "out"),
            "--model",
            str(_model(t, _truncated_weights())),
        ],  # fmt: skip
        says=("model.safetensors",),
    ),
    Case(
        "--param tile=100",
        lambda t: [
            "segment",
            str(_image(t)),
            "--out",
            str(t / "out"),
            "--model",
            str(_model(t)),
            "--param",
            "tile=100",
        ],  # fmt: skip
        says=("tile", "multiple of 32"),
    ),
    Case(
        "--param tile=0",
        lambda t: [
            "segment",
            str(_image(t)),
            "--out",
            str(t / "out"),
            "--model",
            str(_model(t)),
            "--param",
            "tile=0",
        ],  # fmt: skip
        says=("tile=0",),
    ),
    Case(
        "--param batch_size=0",
        lambda t: [
            "segment",
            str(_image(t)),
            "--out",
            str(t / "out"),
            "--model",
            str(_model(t)),
            "--param",
            "batch_size=0",
        ],  # fmt: skip
        says=("batch_size=0",),
    ),
    Case(
        "a truncated TIFF",
        lambda t: _otsu("segment", str(_truncated_tiff(t / "b.tif")), "--out", str(t / "out")),
        says=("b.tif", "truncated"),
    ),
    Case(
        "a folder without images given as the image",
        lambda t: (
            (t / "empty").mkdir() or _otsu("segment", str(t / "empty"), "--out", str(t / "out"))
        ),
        says=("empty", "no image file"),
    ),
    Case(
        "one unreadable image in a batch",
        lambda t: (
            _image(t, "c.png")
            and _truncated_tiff(t / "in" / "b.tif")
            and _otsu(
                "segment",
                str(_image(t)),
                str(t / "in" / "b.tif"),
                str(t / "in" / "c.png"),
                "--out",
                str(t / "out"),
            )
        ),  # fmt: skip
        says=("b.tif",),
        code=1,
        lines=2,
    ),
    Case(
        "a .jpg label in evaluate --dataset DIR",
        lambda t: _otsu(
            "evaluate",
            "--dataset",
            str(
                _folder_dataset(
                    t, {"a.png": EXAMPLE_LABELS.read_bytes(), "b.jpg": EXAMPLE_LABELS.read_bytes()}
                )
            ),
        ),
        says=("b.jpg",),
    ),
    Case(
        "evaluate --json DIR --overwrite, DIR a folder",
        lambda t: (
            (t / "results").mkdir()
            or _otsu(
                "evaluate",
                "--dataset",
                str(_folder_dataset(t, {"a.png": EXAMPLE_LABELS.read_bytes()})),
                "--json",
                str(t / "results"),
                "--overwrite",
            )
        ),  # fmt: skip
        says=("--json", "is a folder"),
    ),
    Case(
        "a missing image with a broken model: the image is named first",
        lambda t: [
            "segment",
            str(t / "missing.png"),
            "--out",
            str(t / "out"),
            "--model",
            str(_model(t, _truncated_weights())),
        ],  # fmt: skip
        says=("missing.png",),
    ),
    Case(
        "existing outputs with a broken model: the outputs are named first",
        lambda t: (
            (t / "out").mkdir()
            or (t / "out" / "a_labels.tif").write_text("x") < 0
            or [
                "segment",
                str(_image(t)),
                "--out",
                str(t / "out"),
                "--model",
                str(_model(t, _truncated_weights())),
            ]
        ),  # fmt: skip
        says=("a_labels.tif", "exist"),
    ),
    Case(
        "train --resume with another config",
        lambda t: [
            "train",
            str((r := _run_folder(t, steps=4))[1]),
            "--out",
            str(r[0]),
            "--resume",
        ],  # fmt: skip
        says=("another config", "steps"),
    ),
    Case(
        "train --resume of a malicious checkpoint.pt",
        lambda t: (
            (run := _run_folder(t, steps=4))
            and (run[0] / "checkpoint.json").unlink() is None
            and evil_torch_file(t, run[0] / "checkpoint.pt") is None
            and ["train", str(run[1]), "--out", str(run[0]), "--resume"]
        ),
        says=("checkpoint.pt", "pickle"),
    ),
    Case(
        "a malicious pickle as model.safetensors",
        lambda t: [
            "segment",
            str(_image(t)),
            "--out",
            str(t / "out"),
            "--model",
            str(_model(t, evil_pickle(t))),
        ],  # fmt: skip
        says=("model.safetensors",),
    ),
    Case(
        "a malicious pickle as a model's thresholds.json",
        lambda t: [
            "segment",
            str(_image(t)),
            "--out",
            str(t / "out"),
            "--model",
            str(_model(t, thresholds_json=evil_pickle(t))),
        ],  # fmt: skip
        says=("thresholds.json",),
    ),
    Case(
        "a malicious pickle as a model's normaliser.json",
        lambda t: [
            "segment",
            str(_image(t)),
            "--out",
            str(t / "out"),
            "--model",
            str(_model(t, normaliser_json=evil_pickle(t))),
        ],  # fmt: skip
        says=("normaliser.json",),
    ),
    Case(
        "a malicious pickle as an image",
        lambda t: (
            (t / "evil.png").write_bytes(evil_pickle(t))
            and _otsu("segment", str(t / "evil.png"), "--out", str(t / "out"))
        ),
        says=("evil.png",),
    ),
    Case(
        "a malicious pickle as a label image",
        lambda t: _otsu(
            "evaluate", "--dataset", str(_folder_dataset(t, {"a.png": evil_pickle(t)}))
        ),  # fmt: skip
        says=("a.png",),
    ),
    Case(
        "a malicious pickle as a training config",
        lambda t: (
            (t / "evil.json").write_bytes(evil_pickle(t))
            and ["train", str(t / "evil.json"), "--out", str(t / "run")]
        ),
        says=("evil.json",),
    ),
    Case(
        "a malicious pickle as a result to compare",
        lambda t: (
            (t / "evil.json").write_bytes(evil_pickle(t)) and ["compare", str(t / "evil.json")]
        ),
        says=("evil.json",),
    ),
]

CASES += slide_cases(Case, BUNDLED)


def run_case(
    case: Case, tmp: Path, argv: list[str], *, pythonpath: str | None = None
) -> subprocess.CompletedProcess:
    """Run ``nucseg argv`` for ``case`` in ``tmp`` (``pythonpath`` first on the path if given)."""
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    if case.read_only is not None:
        command = [sys.executable, "-c", READ_ONLY, str(tmp / case.read_only), *argv]
    else:
        command = [sys.executable, "-m", "nucseg", *argv]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=tmp,
                          preexec_fn=limits(case))  # fmt: skip


def limits(case: Case) -> Callable[[], None] | None:
    """What the case's command runs under before it starts: a file size limit (``ulimit -f``:
    a write beyond it fails with EFBIG, as on a full disk; Python ignores SIGXFSZ)."""
    if case.file_size_limit is None:
        return None
    size = case.file_size_limit

    def limit() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    return limit


def prepare(case: Case, tmp: Path) -> list[str]:
    """Make the case's files in ``tmp``; returns the arguments after ``nucseg``."""
    argv = case.setup(tmp)
    if case.read_only is not None:
        (tmp / case.read_only).mkdir(exist_ok=True)
        (tmp / case.read_only / "kept.txt").write_text("kept")
    return argv


def _snapshot(folder: Path) -> dict[Path, str]:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}


def _leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if "nucseg-tmp" in p.name or ".tmp" in p.name]


def check_clean_failure(
    case: Case, done: subprocess.CompletedProcess, tmp: Path, before: dict[Path, str]
) -> None:
    """The assertions every case shares (see the module docstring)."""
    assert "Traceback" not in done.stderr, done.stderr
    shown = [line for line in done.stderr.splitlines() if line.strip()]
    assert all(line.startswith(("nucseg: error: ", "nucseg: warning: ")) for line in shown), shown
    lines = [line for line in shown if line.startswith("nucseg: error: ")]
    assert len(lines) == case.lines, done.stderr
    for text in case.says:
        assert text in lines[0], (text, lines[0])
    for text in case.not_says:
        assert text not in done.stderr, (text, done.stderr)
    assert done.returncode == case.code, done.stderr
    assert not (tmp / MARKER).exists(), "a file's code ran"
    assert not _leftovers(tmp)
    for path, digest in before.items():
        assert path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == digest, path


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_failure_is_one_clear_line(case, tmp_path):
    argv = prepare(case, tmp_path)
    before = _snapshot(tmp_path)
    done = run_case(case, tmp_path, argv)
    check_clean_failure(case, done, tmp_path, before)
    if case.check is not None:
        case.check(tmp_path, done)
    if case.code == 1:  # a batch: the readable images have all their outputs
        names = sorted(p.name for p in (tmp_path / "out").iterdir())
        assert len(names) == 8 and {n.split("_")[0] for n in names} == {"a", "c"}, names
        assert "finished" in done.stderr and "a.png" in done.stderr.splitlines()[-1]


# --- interruptions, temporaries and partial runs ---------------------------------------------


def _batch(tmp: Path, n: int) -> Path:
    for i in range(n):
        _image(tmp, f"img{i}.png")
    return tmp / "in"


# The second image's read waits until the test has sent its signal (bounded), so the signal
# always lands while work remains, however fast or loaded the machine.
GATED_SEGMENT = """
import os, sys, time
from pathlib import Path
from nucseg import io
from nucseg.cli import main
read = io.read_image
def gated(path, *args, **kwargs):
    if Path(path).name == "img1.png":
        deadline = time.monotonic() + 300
        while not Path(os.environ["NUCSEG_TEST_GATE"]).exists() and time.monotonic() < deadline:
            time.sleep(0.01)
    return read(path, *args, **kwargs)
io.read_image = gated
sys.exit(main())
"""


@pytest.mark.parametrize(
    ("sig", "code", "word"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")],
)
def test_a_signal_leaves_complete_images_only(tmp_path, sig, code, word):
    images = _batch(tmp_path, 12)
    out, gate = tmp_path / "out", tmp_path / "signalled"
    command = [sys.executable, "-c", GATED_SEGMENT, "segment", str(images), "--out", str(out),
               "--method", "fiji"]  # fmt: skip
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NUCSEG_TEST_GATE": str(gate)},
        # a suite started in the background (`pytest &`) inherits SIGINT ignored, and so would
        # the command: give it the default action, as in a terminal
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    first = process.stdout.readline()  # one image done: the work is under way
    assert "img0.png" in first and "nuclei" in first
    process.send_signal(sig)
    gate.touch()
    out_text, err = process.communicate(timeout=120)
    assert process.returncode == code, err
    assert "Traceback" not in err
    assert [line for line in err.splitlines() if line.strip()] == [
        line for line in err.splitlines() if line.startswith(f"nucseg: error: {word}")
    ]
    assert not _leftovers(tmp_path)
    stems = {}
    for path in out.iterdir():
        stems.setdefault(path.name.split("_")[0], []).append(path)
    assert stems and all(len(files) == 4 for files in stems.values()), stems
    assert set(stems) == {"img0"}  # it stopped before writing the image it was waiting for


def test_stale_temporaries_are_removed_and_complete_images_skipped(tmp_path):
    images = _batch(tmp_path, 2)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "nucseg", "segment", str(images), "--out", str(out),
               "--method", "otsu"]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True)
    (out / "img1_nuclei.csv").unlink()  # as SIGTERM used to leave it: 3 of 4 files
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = out / f".img1_nuclei.csv.nucseg-tmp-{dead.pid}-0badcafe.csv"
    stale.write_text("half")
    kept = (out / "img0_labels.tif").stat().st_mtime_ns
    done = subprocess.run([*command, "--skip-existing"], capture_output=True, text=True)
    assert done.returncode == 2 and "--overwrite" in done.stderr  # img1 is incomplete
    assert not stale.exists()
    done = subprocess.run([*command, "--skip-existing", "--overwrite"], capture_output=True,
                          text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "img0.png: skipped" in done.stdout and "img1.png: " in done.stdout
    assert (out / "img0_labels.tif").stat().st_mtime_ns == kept
    assert len(list(out.iterdir())) == 8


def test_segment_help_lists_formats_and_parameters():
    done = subprocess.run([sys.executable, "-m", "nucseg", "segment", "--help"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    text = " ".join(done.stdout.split())
    for word in (".tif", ".png", ".jpg", "tile", "overlap", "batch_size", "tta", "--skip-existing"):
        assert word in text, word


def test_no_bundled_model_warns_once(tmp_path):
    code = (
        "import sys; from nucseg import pipeline; pipeline.bundled_models = lambda: []; "
        "from nucseg.cli import main; sys.exit(main())"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, "segment", str(EXAMPLE_IMAGE), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "no bundled model" in lines[0] and "fiji" in lines[0], lines


# --- pickles that the command line does not reach ---------------------------------------------


def test_no_reader_runs_a_pickle(tmp_path):
    """Mask R-CNN's older model.pt, encoder weights (.pth) and reproduce's checkpoint probe."""
    from nucseg.maskrcnn import read_weights
    from nucseg.models.weights import read_state_dict
    from nucseg.reproduce import _checkpoint_elapsed
    from nucseg.train import TrainConfig

    evil_torch_file(tmp_path, tmp_path / "model.pt")
    with pytest.raises(ValueError, match="model.pt"):
        read_weights(tmp_path)
    shutil.copy(tmp_path / "model.pt", tmp_path / "encoder.pth")
    with pytest.raises(Exception, match="(?i)weights"):
        read_state_dict(tmp_path / "encoder.pth")
    shutil.copy(tmp_path / "model.pt", tmp_path / "checkpoint.pt")
    assert _checkpoint_elapsed(tmp_path, TrainConfig()) is None
    assert not (tmp_path / MARKER).exists()


def test_killed_during_the_renames_is_impossible_to_observe(tmp_path):
    """The four renames run with SIGINT/SIGTERM held back (atomic_group)."""
    from nucseg.atomic import atomic_group

    paths = {k: tmp_path / f"x_{k}.txt" for k in "abcd"}
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt), atomic_group(paths) as tmps:
            for tmp in tmps.values():
                tmp.write_text("x")
            # to the main thread itself: a process-wide kill may be taken by any thread that does
            # not block it, e.g. a native library's worker (OpenVINO's crashed the suite)
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
            time.sleep(0.1)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert not list(tmp_path.iterdir())


def test_worker_threads_leave_signals_to_the_main_thread(tmp_path):
    """segment_files segments in a worker thread; SIGINT and SIGTERM are blocked there, so the
    kernel always hands them to the main thread, whose handler raises at once."""
    from nucseg.pipeline import segment_files

    masks = []

    def segmenter(image):
        masks.append(signal.pthread_sigmask(signal.SIG_BLOCK, []))
        return np.zeros(image.shape[:2], dtype=np.int32)

    images = _batch(tmp_path, 2)
    segment_files(sorted(images.iterdir()), segmenter, tmp_path / "out", progress=False)
    assert len(masks) == 2
    assert all({signal.SIGINT, signal.SIGTERM} <= mask for mask in masks)
    assert not {signal.SIGINT, signal.SIGTERM} & signal.pthread_sigmask(signal.SIG_BLOCK, [])


def test_a_full_disk_during_segment_names_the_folder(tmp_path):
    """``ulimit -f`` (EFBIG, as ENOSPC would): one line naming where and why, nothing left."""
    case = Case("full", lambda t: [], file_size_limit=20_000)
    argv = ["segment", str(_image(tmp_path)), "--out", str(tmp_path / "out"), "--method", "otsu"]
    done = run_case(case, tmp_path, argv)
    assert done.returncode == 2, done.stderr
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("nucseg: error:")]
    assert f"cannot write in {tmp_path / 'out'}" in line and "file size limit" in line, line
    assert not _leftovers(tmp_path) and not list((tmp_path / "out").iterdir())
