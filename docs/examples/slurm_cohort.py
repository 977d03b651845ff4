"""Segment a cohort of slides on a SLURM cluster: dask-jobqueue submits the Dask workers as jobs.

Run it where ``sbatch`` works (a login node, or a small long job), in the environment where
nucseg is installed, with the slides and ``--out`` on storage every node mounts::

    pip install dask-jobqueue
    python docs/examples/slurm_cohort.py /shared/slides/*.svs --out /shared/results \\
        --jobs 10 --queue cpu --account myproject --cores 16 --memory 32GB --walltime 04:00:00

Each SLURM job is one Dask worker process with one Dask thread and ``--cores`` torch threads (one
chunk at a time uses the whole node; a chunk peaks at about 2 GB). The client (this script) holds
no pixels and little memory; the per-slide outputs, ``OUT/slides.csv`` and ``OUT/cohort.parquet``
are the same as ``nucseg slide --workers N`` writes. A slide that fails is reported in
``slides.csv`` and the others go on; rerun with ``--resume`` to finish an interrupted cohort.
See docs/cohorts.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dask_jobqueue import SLURMCluster
from distributed import Client

from nucseg.slide.cli import _table, _write_summary
from nucseg.slide.cohort import SlideOptions, run_cohort


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("slides", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", default="default")
    parser.add_argument("--jobs", type=int, default=10, help="SLURM jobs = Dask workers")
    parser.add_argument("--queue", required=True, help="SLURM partition")
    parser.add_argument("--account", default=None)
    parser.add_argument("--cores", type=int, default=16, help="CPUs per job (torch threads)")
    parser.add_argument("--memory", default="32GB", help="memory per job")
    parser.add_argument("--walltime", default="04:00:00")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--print-job-script", action="store_true", help="print it and stop")
    args = parser.parse_args()

    cluster = SLURMCluster(
        queue=args.queue,
        account=args.account,
        cores=1,  # Dask threads per worker: one chunk at a time...
        job_cpu=args.cores,  # ...on all the CPUs the job books (torch threads, below)
        processes=1,
        memory=args.memory,
        walltime=args.walltime,
        job_name="nucseg-cohort",
        log_directory=str(args.out / "slurm-logs"),
        job_script_prologue=[f"cd {Path.cwd()}"],
    )
    if args.print_job_script:
        print(cluster.job_script())
        return 0
    cluster.scale(jobs=args.jobs)
    options = SlideOptions(model=args.model, resume=args.resume)
    with Client(cluster) as client:
        print(f"dashboard: {client.dashboard_link}", flush=True)
        client.wait_for_workers(1, timeout=3600)  # rows start as soon as one job runs
        args.out.mkdir(parents=True, exist_ok=True)
        rows = run_cohort(args.slides, args.out, options, client=client,
                          torch_threads=args.cores, argv=sys.argv)  # fmt: skip
    cluster.close()
    _write_summary(args.out / "slides.csv", rows)
    print(_table(rows))
    return 2 if any(r["status"] != "ok" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
