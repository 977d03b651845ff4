"""The network's forward passes on real tiles under several OpenVINO settings and torch, in one run.

Tiles of 256 x 256 pixels are cut from the normalised 4 Mpx block of :mod:`profile_chunk` and
predicted in batches by: torch (``--backend torch``, the reference), the OpenVINO backend as
nucseg compiles it (``PERFORMANCE_HINT`` LATENCY, dynamic shapes), and the same network
compiled with other settings: static input shapes, larger batches, THROUGHPUT with an
asynchronous queue, ``NUM_STREAMS``. The variants run in rounds, one after the other in rotating
order, so every variant sees the same machine load; each records wall seconds and CPU seconds of
the process per megapixel (medians over the rounds) and its ratio to torch within each round.
Writes results/slide/openvino_settings.json.

    python benchmarks/bench_openvino_settings.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
from profile_chunk import chunk_setup

from nucseg.atomic import write_json
from nucseg.pipeline import provenance, resolve_model
from nucseg.slide.engine import engine_predictor


def tiles_of(image: np.ndarray, n: int, tile: int = 256) -> np.ndarray:
    """``n`` tiles of ``image`` on a half-tile grid (repeated when the image has fewer)."""
    origins = [(r, c) for r in range(0, image.shape[0] - tile + 1, tile // 2)
               for c in range(0, image.shape[1] - tile + 1, tile // 2)]  # fmt: skip
    return np.stack([image[r : r + tile, c : c + tile] for r, c in (origins * n)[:n]])


def compiled_variant(backend: Any, config: dict[str, Any], batch: int | None) -> Any:
    """The backend's network (softmax inside) compiled with ``config``; static shapes for
    ``batch`` tiles of 256 when ``batch`` is given."""
    from nucseg.backends.openvino_runtime import with_softmax

    network = with_softmax(backend.network.clone(), backend.num_classes)
    if batch is not None:
        network.reshape([batch, 256, 256, 3])
    return backend.core.compile_model(network, "CPU", config)


def sync_runner(compiled: Any, batch: int) -> Any:
    request = compiled.create_infer_request()

    def run(tiles: np.ndarray) -> None:
        for i in range(0, len(tiles), batch):
            request.infer({0: tiles[i : i + batch]})
            np.array(request.get_output_tensor(0).data, dtype=np.float32, copy=True)

    return run


def async_runner(compiled: Any, batch: int) -> Any:
    import openvino as ov

    queue = ov.AsyncInferQueue(compiled)
    queue.set_callback(lambda request, _: np.array(request.get_output_tensor(0).data, copy=True))

    def run(tiles: np.ndarray) -> None:
        for i in range(0, len(tiles), batch):
            queue.start_async({0: tiles[i : i + batch]})
        queue.wait_all()

    return run


def variants(folder: Path, tiles: np.ndarray) -> dict[str, Any]:
    """Name -> function predicting all ``tiles``."""
    torch_backend = engine_predictor(folder, backend="torch").backend
    default = engine_predictor(folder, backend="openvino").backend
    precision = default.precision
    latency = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
    throughput = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "THROUGHPUT"}
    out = {
        "torch b8": lambda t: [torch_backend.predict(t[i : i + 8]) for i in range(0, len(t), 8)],
        "openvino b8 (nucseg)": lambda t: [
            default.predict(t[i : i + 8]) for i in range(0, len(t), 8)
        ],
    }
    for batch in (8, 16, 32):
        out[f"latency static b{batch}"] = sync_runner(
            compiled_variant(default, latency, batch), batch
        )
    out["latency dynamic b32"] = sync_runner(compiled_variant(default, latency, None), 32)
    out["throughput static b8 async"] = async_runner(compiled_variant(default, throughput, 8), 8)
    streams = {**throughput, "NUM_STREAMS": 2, "INFERENCE_NUM_THREADS": os.cpu_count() or 1}
    out["2 streams static b8 async"] = async_runner(compiled_variant(default, streams, 8), 8)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("results/slide/openvino_settings.json"))
    args = parser.parse_args()
    if args.tiles % 32:
        parser.error("--tiles must be a multiple of 32 (the largest static batch)")
    folder = resolve_model("default")
    origin = provenance(models=[folder])
    image, _, segmenter = chunk_setup(folder)
    tiles = tiles_of(segmenter.normalise(image), args.tiles)
    runs = variants(folder, tiles)
    mpx = tiles.shape[0] * tiles.shape[1] * tiles.shape[2] / 1e6
    wall: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    for run in runs.values():  # warm-up
        run(tiles)
    names = list(runs)
    for k in range(args.rounds):
        for name in names[k % len(names) :] + names[: k % len(names)]:
            start, start_cpu = time.perf_counter(), time.process_time()
            runs[name](tiles)
            cpu[name].append((time.process_time() - start_cpu) / mpx)
            wall[name].append((time.perf_counter() - start) / mpx)
    record = {
        "benchmark": __doc__.splitlines()[0],
        "tiles": int(tiles.shape[0]),
        "mpx": mpx,
        "seconds_per_mpx": {n: statistics.median(v) for n, v in wall.items()},
        "cpu_seconds_per_mpx": {n: statistics.median(v) for n, v in cpu.items()},
        "speed_vs_torch_per_round": {
            n: [t / v for t, v in zip(wall["torch b8"], wall[n], strict=True)] for n in wall
        },
        "runs": wall,
        "cpu_runs": cpu,
        "load": [round(v, 2) for v in os.getloadavg()],
        "provenance": origin,
    }
    for name in names:
        ratios = record["speed_vs_torch_per_round"][name]
        print(f"{name:28s} {record['seconds_per_mpx'][name]:.3f} s/Mpx "
              f"{record['cpu_seconds_per_mpx'][name]:.3f} CPU s/Mpx  x{min(ratios):.2f}-"
              f"{max(ratios):.2f} vs torch")  # fmt: skip
    write_json(args.out, record, overwrite=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
