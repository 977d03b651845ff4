"""Cohorts on Dask: a LocalCluster, an external ``dask scheduler`` + ``dask worker`` cluster and a
worker killed mid-run all give the single-process path's outputs; failures are per slide.

Slides are small synthetic pyramidal TIFFs cut into many small chunks; the method is Otsu (no
model), so a run is seconds and every difference comes from the orchestration.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from slide_cases import disk_pixels

from nucseg.cli import main
from nucseg.slide.synthetic import write_slide

CHUNK, HALO = 128, 24
OPTIONS = ["--method", "otsu", "--chunk", str(CHUNK), "--halo", str(HALO), "--no-progress"]


def disk_slide(path: Path, size: int, seed: int) -> Path:
    """A pink slide with dark disks at random places (some on chunk seams)."""
    image = disk_pixels(size, seed)
    return write_slide(path, (size, size), image, mpp=0.25, compression="zlib")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Three slides and their single-process outputs (``nucseg slide`` without Dask)."""
    folder = tmp_path_factory.mktemp("cohort")
    slides = [disk_slide(folder / f"s{k}.tif", 320 + 32 * k, k) for k in range(3)]
    reference = folder / "reference"
    assert main(["slide", *map(str, slides), "--out", str(reference), *OPTIONS]) == 0
    return slides, reference


def canonical(table: pd.DataFrame) -> pd.DataFrame:
    """Rows ordered by centroid (row, then column): the order no scheduler decides."""
    return table.sort_values(["centroid_y", "centroid_x"], kind="stable").reset_index(drop=True)


def assert_same_outputs(out: Path, reference: Path, stems: list[str]) -> None:
    for stem in stems:
        got, want = out / stem, reference / stem
        table = pd.read_parquet(got / "nuclei.parquet")
        assert len(table) > 10
        pd.testing.assert_frame_equal(
            canonical(table), canonical(pd.read_parquet(want / "nuclei.parquet"))
        )
        assert (got / "nuclei.geojson").read_bytes() == (want / "nuclei.geojson").read_bytes()
        np.testing.assert_array_equal(
            tifffile.imread(got / "labels.ome.tif"), tifffile.imread(want / "labels.ome.tif")
        )
        assert not (got / "chunks").exists()
    cohort = pd.read_parquet(out / "cohort.parquet")  # a Hive-partitioned dataset
    single = pd.read_parquet(reference / "cohort.parquet")
    for stem in stems:
        part = cohort[cohort["slide"] == stem].drop(columns="slide")
        want = pd.read_parquet(reference / stem / "nuclei.parquet")
        pd.testing.assert_frame_equal(canonical(part), canonical(want))
        pd.testing.assert_frame_equal(canonical(part), canonical(
            single[single["slide"] == stem].drop(columns="slide")))  # fmt: skip


def test_local_cluster_matches_single_process_and_reports_a_bad_slide(cohort, tmp_path, capsys):
    slides, reference = cohort
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"not a tiff")
    out = tmp_path / "out"
    args = ["slide", *map(str, slides[:1] + [bad] + slides[1:]), "--out", str(out), *OPTIONS]
    assert main([*args, "--workers", "2"]) == 2
    printed = capsys.readouterr()
    assert printed.out.startswith("dashboard: http://")
    assert printed.err.count("nucseg: error:") == 1 and "broken.tif" in printed.err
    # one line per problem: no Dask INFO lines, no shutdown traceback (issue 29)
    assert "Traceback" not in printed.err and "CommClosedError" not in printed.err
    assert all(line.startswith("nucseg: ") for line in printed.err.splitlines() if line), printed
    summary = pd.read_csv(out / "slides.csv")
    assert summary["status"].tolist() == ["ok", "failed", "ok", "ok"]
    assert "broken.tif" in summary["error"][1]
    ok = summary[summary["status"] == "ok"]
    assert (ok["nuclei"] > 10).all() and (ok["chunk_seconds"] > 0).all()
    assert_same_outputs(out, reference, ["s0", "s1", "s2"])
    pyarrow_table = (
        __import__("pyarrow.dataset")
        .dataset.dataset(out / "cohort.parquet", partitioning="hive")
        .to_table()
    )
    assert pyarrow_table.num_rows == ok["nuclei"].sum()
    report = json.loads((out / "s1" / "report.json").read_text())
    assert report["distributed"] and report["nuclei"] == ok["nuclei"].iloc[1]


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--workers", "0"], "--workers must be a positive"),
        (["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"], "give exactly one of --workers"),
        (["--scheduler-file", "missing.json"], "--scheduler-file missing.json: no such file"),
        (
            ["--scheduler", "tcp://127.0.0.1:1", "--connect-timeout", "0"],
            "--connect-timeout must be a positive",
        ),
        (
            ["--scheduler", "tcp://127.0.0.1:1", "--connect-timeout", "1"],
            "Timed out trying to connect to tcp://127.0.0.1:1 after 1",
        ),
    ],
)
def test_cluster_options_are_checked_before_any_work(tmp_path, capsys, option, message):
    args = ["slide", "missing.svs", "--out", str(tmp_path), "--method", "otsu", *option]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"nucseg: error: {message}") and err.count("\n") == 1
    assert not (tmp_path / "slides.csv").exists()


# --- an external cluster: `dask scheduler` and two `dask worker` processes ----------------------


def _scheduler_address(file, *, deadline: float) -> str:
    """The address in dask's scheduler file, once it is whole: the scheduler creates the file
    and then writes it, so a read between the two finds it empty (a CI failure under load)."""
    while True:
        try:
            return json.loads(file.read_text())["address"]
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture(scope="module")
def external_cluster(tmp_path_factory):
    """A scheduler and two single-threaded workers (no nanny) on 127.0.0.1, stopped at the end."""
    folder = tmp_path_factory.mktemp("dask")
    file = folder / "scheduler.json"
    cli = [sys.executable, "-m", "dask"]
    started = []
    try:
        started.append(subprocess.Popen(
            [*cli, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
             "--scheduler-file", str(file)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ))  # fmt: skip
        address = _scheduler_address(file, deadline=time.monotonic() + 120)
        for _ in range(2):
            started.append(subprocess.Popen(
                [*cli, "worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard",
                 "--host", "127.0.0.1", "--local-directory", str(folder)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))  # fmt: skip
        from distributed import Client

        with Client(address, timeout="60s") as client:
            client.wait_for_workers(2, timeout=120)
        yield address, started[1:]
    finally:
        for process in reversed(started):
            if process.poll() is None:
                process.terminate()
        for process in started:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_external_scheduler_gives_the_same_outputs(cohort, external_cluster, tmp_path):
    slides, reference = cohort
    address, _ = external_cluster
    out = tmp_path / "out"
    command = [sys.executable, "-m", "nucseg.cli", "slide", *map(str, slides[:2]), "--out",
               str(out), *OPTIONS, "--scheduler", address]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("dashboard: ")
    assert_same_outputs(out, reference, ["s0", "s1"])


def test_model_is_loaded_once_per_worker(cohort, external_cluster, tmp_path):
    """The worker plugin loads the bundled model once per process; chunks find it cached."""
    from distributed import Client

    from nucseg.slide.cohort import SlideOptions, run_cohort
    from nucseg.slide.engine import load_predictor

    slides, _ = cohort
    address, _ = external_cluster
    options = SlideOptions(model="default", chunk=128, halo=32, predict=(("batch_size", 4),))
    with Client(address) as client:
        rows = run_cohort(slides[:1], tmp_path, options, client=client)
        loads = {w: info.misses for w, info in client.run(load_predictor.cache_info).items()}
    assert rows[0]["status"] == "ok", rows[0]["error"]
    assert sorted(loads.values()) == [1, 1]
    report = json.loads((tmp_path / "s0" / "report.json").read_text())
    assert report["chunks"] >= 4 and len(report["model"]["sha256"]) == 64


def test_resume_on_the_cluster_redoes_only_missing_chunks(cohort, external_cluster, tmp_path):
    """A dead run's finished chunks are kept; --resume on the cluster redoes only the others."""
    from nucseg.slide import segment_slide

    slides, reference = cohort
    address, _ = external_cluster
    out = tmp_path / "out"
    segment_slide(slides[2], out, method="otsu", chunk=CHUNK, halo=HALO, progress=False,
                  keep_chunks=True)  # fmt: skip
    folder = out / "s2"
    for file in folder.glob("*.*"):  # the final files: the run died before writing them
        file.unlink()
    done = sorted((folder / "chunks").glob("r*.parquet"))
    for file in done[::2]:  # and before some chunks
        file.unlink()
    command = [sys.executable, "-m", "nucseg.cli", "slide", str(slides[2]), "--out", str(out),
               *OPTIONS, "--scheduler", address]  # fmt: skip
    refused = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert refused.returncode == 2 and "--resume" in refused.stderr
    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads((folder / "report.json").read_text())
    assert report["chunks_resumed"] == len(done) - len(done[::2]) > 0
    assert_same_outputs(out, reference, ["s2"])


def test_a_worker_killed_mid_run_changes_nothing(cohort, external_cluster, tmp_path):
    """Run last in this file: it kills one of the fixture's two workers.

    No race with the machine's speed: the victim is stopped (SIGSTOP) before the run, so the
    tasks the scheduler gives it cannot finish; it is killed once the scheduler shows it holding
    one and the other worker has written a chunk file, whatever the load.
    """
    from distributed import Client

    slides, reference = cohort
    address, workers = external_cluster
    with Client(address, timeout="120s") as watcher:
        by_pid = {pid: a for a, pid in watcher.run(os.getpid).items()}
        victim = by_pid[workers[0].pid]
        out = tmp_path / "out"
        command = [sys.executable, "-m", "nucseg.cli", "slide", *map(str, slides), "--out",
                   str(out), *OPTIONS, "--scheduler", address]  # fmt: skip
        os.kill(workers[0].pid, signal.SIGSTOP)
        run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            held = _wait_for(lambda: watcher.processing([victim]).get(victim))
            _wait_for(lambda: list(out.glob("*/chunks/r*.parquet")))
            finished = list(out.glob("*/nuclei.parquet"))
            os.kill(workers[0].pid, signal.SIGKILL)
            stdout, stderr = run.communicate(timeout=600)
        finally:
            if run.poll() is None:
                run.kill()
    assert workers[0].wait(timeout=30) == -signal.SIGKILL
    assert held and len(finished) < len(slides)  # the victim held tasks of unfinished slides
    assert run.returncode == 0, stderr
    assert_same_outputs(out, reference, ["s0", "s1", "s2"])


def _wait_for(condition, timeout: float = 300.0):
    """Poll ``condition`` until it returns something true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
    return value


def test_the_scheduler_address_waits_for_a_whole_file(tmp_path):
    import threading

    file = tmp_path / "scheduler.json"
    file.write_text("")  # created, not yet written: what the fixture once read

    def write():
        time.sleep(0.5)
        file.write_text(json.dumps({"address": "tcp://127.0.0.1:1"}))

    threading.Thread(target=write).start()
    assert _scheduler_address(file, deadline=time.monotonic() + 30) == "tcp://127.0.0.1:1"
    file.write_text("")
    with pytest.raises(json.JSONDecodeError):
        _scheduler_address(file, deadline=time.monotonic() + 0.5)
