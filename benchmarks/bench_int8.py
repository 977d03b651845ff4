"""The int8 network of a model (``nucseg quantise``): its validation check and its speed.

    python benchmarks/bench_int8.py --out results/backends/int8.json

1. ``nucseg quantise MODEL`` (:func:`nucseg.quantise.quantise_model`) into a fresh cache folder:
   NNCF calibrated on 128 training tiles, then fp32 and int8 scored on the model's validation
   images (int8 is offered only if it loses at most 0.005 of mean validation AJI).
2. The forward pass of 8 tiles of 256 x 256 pixels on one thread, OpenVINO fp32, bf16 and int8,
   interleaved, 7 repeats each, medians, in one child process per instruction set: this CPU as it
   is, then limited by oneDNN's ``ONEDNN_MAX_CPU_ISA`` to AVX512-VNNI (no AMX, no native bf16:
   many servers) and to AVX2 (most laptops and older servers), the CPUs where precision "auto"
   takes int8. bf16 is timed only where the CPU computes it natively.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ISAS = {"native": None, "avx512_vnni": "AVX512_CORE_VNNI", "avx2": "AVX2"}


def child(folder: Path, repeats: int) -> dict:
    """Time fp32, bf16 (native only) and int8 in this process; ONEDNN_MAX_CPU_ISA is set by the
    parent."""
    import time

    import openvino as ov

    from nucseg.backends import int8
    from nucseg.backends.common import cpu_has_bf16
    from nucseg.infer import Predictor
    from nucseg.quantise import _config, calibration_tiles

    predictor = Predictor.load(folder, backend="openvino", precision="fp32")
    export = predictor.backend.network
    tiles, _ = calibration_tiles(_config(folder), predictor.normaliser, count=8, seed=1)
    batch = np.concatenate(tiles)
    core = ov.Core()
    networks = {"fp32": (export, "f32"), "int8": (core.read_model(
        str(int8.network_path(folder, predictor.weights_sha256))), "f32")}  # fmt: skip
    limited = os.environ.get("ONEDNN_MAX_CPU_ISA")
    if cpu_has_bf16() and not limited:
        networks["bf16"] = (export, "bf16")
    requests = {}
    for name, (network, hint) in networks.items():
        config = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY",
                  "INFERENCE_NUM_THREADS": 1}  # fmt: skip
        compiled = core.compile_model(network, "CPU", config)
        requests[name] = compiled.create_infer_request()
        requests[name].infer({0: batch})  # warm
    seconds = {name: [] for name in requests}
    for _ in range(repeats):
        for name, request in requests.items():
            start = time.perf_counter()
            request.infer({0: batch})
            seconds[name].append(time.perf_counter() - start)
    medians = {name: float(np.median(v)) for name, v in seconds.items()}
    return {
        "isa_limit": limited,
        "seconds_per_8_tiles": medians,
        "runs": seconds,
        "int8_speedup_vs_fp32": medians["fp32"] / medians["int8"],
        **({"int8_speedup_vs_bf16": medians["bf16"] / medians["int8"]} if "bf16" in medians
           else {}),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--out", type=Path, default=Path("results/backends/int8.json"))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.repeats)))
        return

    from nucseg.atomic import atomic_write
    from nucseg.pipeline import resolve_model
    from nucseg.provenance import provenance
    from nucseg.quantise import quantise_model

    folder = resolve_model(args.model)
    with tempfile.TemporaryDirectory() as cache:
        os.environ["NUCSEG_CACHE"] = cache  # a fresh export and int8 network, nothing reused
        record = quantise_model(folder, overwrite=True, progress=False)
        print(f"validation: fp32 {record['validation']['fp32']['source_mean_aji']:.4f}, int8 "
              f"{record['validation']['int8']['source_mean_aji']:.4f}", flush=True)  # fmt: skip
        timings = {}
        for name, isa in ISAS.items():
            env = {**os.environ, "OMP_NUM_THREADS": "1"}
            env.pop("ONEDNN_MAX_CPU_ISA", None)
            if isa:
                env["ONEDNN_MAX_CPU_ISA"] = isa
            done = subprocess.run(
                [sys.executable, __file__, "--child", str(folder), "--repeats", str(args.repeats)],
                capture_output=True, text=True, env=env,
            )  # fmt: skip
            if done.returncode:
                raise RuntimeError(f"timing child ({name}) failed:\n{done.stderr[-3000:]}")
            timings[name] = json.loads(done.stdout.strip().splitlines()[-1])
            print(name, json.dumps(timings[name]["seconds_per_8_tiles"]), flush=True)
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    out = {
        "benchmark": "int8 network (nucseg quantise): validation check and forward-pass speed",
        "model": args.model,
        "int8_record": {k: v for k, v in record.items() if k not in ("folder", "provenance")},
        "timing": {"threads": 1, "batch": "8 tiles of 256 x 256", "repeats": args.repeats,
                   "per_isa": timings},
        "cpu_flags": sorted({f for f in ("amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni",
                                         "avx2") if f in flags}),
        "provenance": provenance(models=[folder]),
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(args.out, overwrite=True) as tmp:
        tmp.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
