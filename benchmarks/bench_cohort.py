"""Cohort benchmark: ``nucseg slide`` on a Dask cluster of 1 and 2 worker processes.

For each cluster size K (a ``dask scheduler`` and K ``dask worker --nthreads 1`` processes on
127.0.0.1, started here as in production), in one run:

- the scheduler's own overhead per task: 400 no-op tasks, wall time x threads / tasks;
- a cohort of synthetic slides (dark disks on pink tissue, ``--slides`` of ``--size`` pixels)
  with ``--method`` at chunk ``--chunk``: wall time, each task's compute time from Dask's task
  stream (prepare, chunk, finish), the overhead per task left over (wall x threads - compute)
  / tasks, the bytes moved between processes (task results, worker-to-worker transfers) and the
  bytes each chunk reads from and writes to the shared folder;
- with K = 1: the peak memory of the client process (``nucseg slide --scheduler``) for 3 and for
  12 small slides; and the time of one chunk task at the default chunk size (4080) with the
  bundled model (``--skip-model`` to leave it out);

then a scaling estimate for 1,000 slides on 1, 10 and 100 machines like this one. Writes
results/cohort/bench.json (command, commit, modified files, model SHA-256, machine load).

    python benchmarks/bench_cohort.py
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from nucseg.pipeline import resolve_model
from nucseg.provenance import provenance
from nucseg.slide.cohort import SlideOptions, run_cohort
from nucseg.slide.synthetic import write_slide

MPX_PER_MM2 = 1e6 / 0.25**2 / 1e6  # 40x: 16 MPx per mm2 of tissue


def disk_region(seed: int):
    """``region(y, x, h, w)``: pink tissue with dark 8-pixel disks, about 1 per 2,000 pixels."""

    def region(y: int, x: int, h: int, w: int) -> np.ndarray:
        out = np.empty((h, w, 3), dtype=np.uint8)
        out[:] = (225, 170, 215)
        rng = np.random.default_rng([seed, y, x])
        rows, cols = np.mgrid[:h, :w]
        for r, c in rng.integers(10, (max(h - 10, 11), max(w - 10, 11)), (h * w // 2000, 2)):
            out[(rows - r) ** 2 + (cols - c) ** 2 <= 64] = (60, 30, 120)
        return out

    return region


def make_slides(folder: Path, n: int, size: int, prefix: str) -> list[Path]:
    return [
        write_slide(
            folder / f"{prefix}{k}.tif",
            (size, size),
            disk_region(k),
            mpp=0.25,
            compression="zlib",
            levels=3,
        )  # fmt: skip
        for k in range(n)
    ]


def start_cluster(folder: Path, workers: int) -> tuple[str, list[subprocess.Popen]]:
    """``dask scheduler`` and ``workers`` single-threaded ``dask worker`` processes."""
    file = folder / f"scheduler-{workers}.json"
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // workers))}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
    dask = [sys.executable, "-m", "dask"]
    scheduler = [*dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard"]
    procs = [subprocess.Popen([*scheduler, "--scheduler-file", str(file)], **quiet)]
    while not file.is_file():
        time.sleep(0.2)
    address = json.loads(file.read_text())["address"]
    for _ in range(workers):
        procs.append(subprocess.Popen([*dask, "worker", address, "--nthreads", "1",
                                       "--no-dashboard", "--local-directory", str(folder)],
                                      **quiet))  # fmt: skip
    return address, procs


def stop_cluster(procs: list[subprocess.Popen]) -> None:
    for proc in reversed(procs):
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _noop(i: int) -> int:
    return i


def _warm() -> None:
    import nucseg.slide.chunkio  # noqa: F401  (imports of the first chunk, not timed)
    import nucseg.slide.cohort  # noqa: F401
    import nucseg.slide.writers  # noqa: F401


def noop_overhead(client, n: int = 400) -> float:
    """Seconds of scheduler, comms and worker bookkeeping per task (tasks that do nothing)."""
    client.gather(client.map(_noop, range(20), pure=False))  # warm up
    start = time.perf_counter()
    client.gather(client.map(_noop, range(n), pure=False))
    return (time.perf_counter() - start) * sum(client.nthreads().values()) / n


def _worker_transfers(dask_worker) -> int:
    return int(dask_worker.transfer_outgoing_bytes_total)


def cohort_run(client, slides: list[Path], out: Path, options: SlideOptions) -> dict:
    """One cohort run, timed through Dask's task stream."""
    from distributed import get_task_stream

    before = sum(client.run(_worker_transfers).values())
    start = time.perf_counter()
    with get_task_stream(client) as stream:
        rows = run_cohort(slides, out, options, client=client)
    wall = time.perf_counter() - start
    assert all(r["status"] == "ok" for r in rows), rows
    tasks: dict[str, list[float]] = {}
    result_bytes = 0
    for record in stream.data:
        prefix = str(record["key"]).split("-")[0]
        compute = sum(s["stop"] - s["start"] for s in record["startstops"]
                      if s["action"] == "compute")  # fmt: skip
        tasks.setdefault(prefix, []).append(compute)
        result_bytes += int(record.get("nbytes", 0))
    threads = sum(client.nthreads().values())
    n_tasks = sum(len(v) for v in tasks.values())
    busy = sum(sum(v) for v in tasks.values())
    written = [f.stat().st_size for f in out.glob("*/chunks/r*")]
    chunks = sum(1 for _ in out.glob("*/chunks/r*.parquet"))
    outputs = sum(f.stat().st_size for f in out.glob("*/*") if f.is_file())
    return {
        "slides": len(slides),
        "wall_s": wall,
        "tasks": {
            k: {"n": len(v), "mean_s": float(np.mean(v)), "max_s": float(np.max(v))}
            for k, v in tasks.items()
        },  # fmt: skip
        "overhead_per_task_s": (wall * threads - busy) / n_tasks,
        "result_bytes_per_task": result_bytes / n_tasks,
        "worker_transfer_bytes": sum(client.run(_worker_transfers).values()) - before,
        "chunk_file_bytes_per_chunk": sum(written) / max(chunks, 1),
        "output_bytes_per_slide": outputs / len(slides),
        "nuclei": int(sum(r["nuclei"] for r in rows)),
    }


def client_peak_mb(address: str, slides: list[Path], out: Path, chunk: int) -> float:
    """Peak RSS of a ``nucseg slide --scheduler`` client process, in MB."""
    code = (
        "import resource, sys; from nucseg.cli import main; rc = main(sys.argv[1:]); "
        "print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024); sys.exit(rc)"
    )
    command = [sys.executable, "-c", code, "slide", *map(str, slides), "--out", str(out),
               "--method", "otsu", "--chunk", str(chunk), "--halo", "24", "--no-progress",
               "--scheduler", address]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return float(done.stdout.split("PEAK")[-1])


def scaling(measured: dict, *, slides: int, tissue_mm2: float, machines: list[int]) -> list[dict]:
    """Hours for ``slides`` slides of ``tissue_mm2`` on K machines like this one (one worker
    process using all its cores each), from the default-chunk task time and the overheads."""
    chunk_s = measured["model_chunk"]["task_s"]
    chunk_mpx = measured["model_chunk"]["core_mpx"]
    per_slide = int(np.ceil(tissue_mm2 * MPX_PER_MM2 / chunk_mpx))
    overhead = measured["by_workers"]["1"]["overhead_per_task_s"]
    rows = []
    for k in machines:
        tasks = slides * (per_slide + 2)
        hours = tasks * (chunk_s * per_slide / (per_slide + 2) + overhead) / k / 3600
        rows.append({
            "machines": k, "chunks_per_slide": per_slide, "tasks": tasks, "hours": hours,
            "scheduler_tasks_per_s": k / chunk_s,
            "storage_mb_per_s": k / chunk_s * measured["model_chunk"]["bytes_moved"] / 1e6,
        })  # fmt: skip
    return rows


def model_chunk(client, folder: Path, chunk: int) -> dict:
    """One chunk task at ``chunk`` pixels with the bundled model, timed on the cluster."""
    from distributed import get_task_stream

    (slide,) = make_slides(folder, 1, chunk, "model")
    out = folder / "model-out"
    options = SlideOptions(model="default", chunk=chunk, halo=128, keep_chunks=True)
    with get_task_stream(client) as stream:
        (row,) = run_cohort([slide], out, options, client=client)
    assert row["status"] == "ok", row
    (task,) = [r for r in stream.data if str(r["key"]).startswith("chunk_task")]
    compute = sum(s["stop"] - s["start"] for s in task["startstops"] if s["action"] == "compute")
    written = {f.suffix: f.stat().st_size for f in out.glob("*/chunks/r*")}
    return {"chunk": chunk, "core_mpx": chunk * chunk / 1e6, "task_s": compute,
            "bytes_read": slide.stat().st_size, "bytes_written": sum(written.values()),
            "bytes_written_npy": written.get(".npy", 0),
            "bytes_moved": slide.stat().st_size + sum(written.values())}  # fmt: skip


def main() -> None:
    from distributed import Client

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slides", type=int, default=4)
    parser.add_argument("--size", type=int, default=2048, help="slide side, pixels")
    parser.add_argument("--chunk", type=int, default=512)
    parser.add_argument("--method", default="otsu")
    parser.add_argument("--model-chunk", type=int, default=4080)
    parser.add_argument("--skip-model", action="store_true")
    parser.add_argument("--tissue-mm2", type=float, default=100.0, help="per slide, for scaling")
    parser.add_argument("--out", type=Path, default=Path("results/cohort/bench.json"))
    args = parser.parse_args()
    record: dict = {"load_before": os.getloadavg(), "cores": os.cpu_count(), "by_workers": {}}
    options = SlideOptions(method=args.method, chunk=args.chunk, halo=24, keep_chunks=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        slides = make_slides(folder, args.slides, args.size, "s")
        small = make_slides(folder, 12, 320, "m")
        for workers in (1, 2):
            address, procs = start_cluster(folder, workers)
            try:
                with Client(address, timeout="120s") as client:
                    client.wait_for_workers(workers, timeout=300)
                    client.run(_warm)
                    result = {"load_before": os.getloadavg()}
                    result["noop_overhead_per_task_s"] = noop_overhead(client)
                    result.update(cohort_run(client, slides, folder / f"out{workers}", options))
                    print(workers, "workers:", json.dumps(result), flush=True)
                    record["by_workers"][str(workers)] = result
                    if workers == 1:
                        record["client_peak_mb"] = {
                            str(n): client_peak_mb(address, small[:n], folder / f"mem{n}", 128)
                            for n in (3, 12)
                        }
                        print("client peak MB:", record["client_peak_mb"], flush=True)
                        if not args.skip_model:
                            record["model_chunk"] = model_chunk(client, folder, args.model_chunk)
                            print("model chunk:", record["model_chunk"], flush=True)
            finally:
                stop_cluster(procs)
    one, two = record["by_workers"]["1"], record["by_workers"]["2"]
    record["speedup_2_workers"] = one["wall_s"] / two["wall_s"]
    peaks = record["client_peak_mb"]
    record["client_peak_ratio_12_vs_3"] = peaks["12"] / peaks["3"]
    if "model_chunk" in record:
        record["overhead_fraction_default_chunk"] = (
            max(one["overhead_per_task_s"], one["noop_overhead_per_task_s"])
            / record["model_chunk"]["task_s"]
        )
        record["scaling"] = scaling(record, slides=1000, tissue_mm2=args.tissue_mm2,
                                    machines=[1, 10, 100])  # fmt: skip
    record["load_after"] = os.getloadavg()
    record["bench_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    record.update(provenance(sys.argv, models=[resolve_model("default")]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp, args.out)
    print(json.dumps({k: v for k, v in record.items() if k != "by_workers"}, indent=1))


if __name__ == "__main__":
    main()
