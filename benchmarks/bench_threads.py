"""The network of one slide chunk alone and with a chunk being finished beside it, per number of
torch threads: how much a finishing thread slows the network's OpenMP threads on shared cores.

(Giving the network one thread fewer during ``nucseg slide``'s chunk loop was tried on this
2-core CPU and did not make the chunk phase faster: the finishing thread is idle about half of
the time, and then the network runs on one core. So the engine keeps torch's default.)

One 4 Mpx chunk (the block of :mod:`profile_chunk`) is predicted ``--repeats`` times with torch's
default threads and with one fewer, first alone, then while another thread finishes chunks
(measurements, polygons, quality figures, files) in a loop. Writes results/slide/threads.json.

    python benchmarks/bench_threads.py
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import torch
from profile_chunk import _Plan, chunk_setup

from nucseg.atomic import write_json
from nucseg.pipeline import provenance, resolve_model
from nucseg.slide.chunkio import write_chunk
from nucseg.slide.engine import predict_tissue_maps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("results/slide/threads.json"))
    args = parser.parse_args()
    folder = resolve_model(args.model)
    origin = provenance(models=[folder])
    image, predictor, segmenter = chunk_setup(folder)
    normalised = segmenter.normalise(image)
    labels = predictor.maps_to_labels(predict_tissue_maps(predictor, normalised, tissue=image))

    def network() -> float:
        start = time.perf_counter()
        for _ in range(args.repeats):
            predict_tissue_maps(predictor, normalised, tissue=image)
        return (time.perf_counter() - start) / args.repeats

    default = torch.get_num_threads()
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for threads in sorted({default, max(1, default - 1)}, reverse=True):
            torch.set_num_threads(threads)
            network()  # warm-up
            alone = network()
            stop, finished = threading.Event(), [0]

            def finishing(stop: threading.Event, finished: list[int]) -> None:
                while not stop.is_set():
                    write_chunk(_Plan(), (0, 0), image, labels, Path(work))
                    finished[0] += 1

            side = threading.Thread(target=finishing, args=(stop, finished))
            side.start()
            beside = network()
            stop.set()
            side.join()
            rows.append(
                {
                    "torch_threads": threads,
                    "network_alone_s": alone,
                    "network_beside_finishing_s": beside,
                    "slowdown": beside / alone,
                    "chunks_finished_per_s": finished[0] / (beside * args.repeats),
                }
            )
            print(
                f"{threads} torch threads: network {alone:.2f} s alone, {beside:.2f} s beside a "
                f"finishing thread ({beside / alone:.2f} x)"
            )
    torch.set_num_threads(default)
    record = {
        "benchmark": "one 4 Mpx chunk's network, alone and beside a finishing thread",
        "cpus": torch.get_num_threads(),
        "rows": rows,
        "provenance": origin,
    }
    write_json(args.out, record, overwrite=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
