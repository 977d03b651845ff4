"""Regenerate every results file the README and docs quote, then check their figures.

    python benchmarks/regenerate.py              # everything that can be regenerated (hours)
    python benchmarks/regenerate.py --list       # the jobs, their outputs and commands
    python benchmarks/regenerate.py --only unet --only slide-tiles
    python benchmarks/regenerate.py --no-model   # only the jobs that need no network (minutes)
    make results                                 # the same as the first line, in .venv

Each job is one or more commands run from the repository root with this Python; each output
records its command, commit and (for a model) the weights' SHA-256, so the figures come from the
bundled model of the checkout it runs in. It refuses a modified tree (files outside ``results/``
changed or untracked): a result must name the commit that made it. At the end it runs
``benchmarks/figures.py``, whose check the docs must pass.

Jobs marked ``record`` are the model-selection records of trained candidates (``runs/...``, hours
of training each): they are listed with the commands that wrote them, and run only when named
with ``--only`` and their run folders exist. Every results file the docs quote is an output of a
job (``tests/test_figures.py`` checks it).
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


@dataclasses.dataclass(frozen=True)
class Job:
    """Commands (argv lists, run in order) and the results files they write."""

    commands: tuple[tuple[str, ...], ...]
    outputs: tuple[str, ...]
    model: bool = True  # needs the bundled network (its figures change with the weights)
    record: bool = False  # a selection record of trained runs: not run by default
    needs: tuple[str, ...] = ()  # folders that must exist (trained runs)


def _stain(name: str, model: str | None = None, method: str | None = None) -> tuple[str, ...]:
    what = ("--model", model) if model else ("--method", method or "")
    return (PY, "benchmarks/bench_stain.py", *what, "--name", name, "--overwrite")


def _evaluate(run: str, dataset: str, out: str, *, markdown: bool = True) -> tuple[str, ...]:
    tables = ("--markdown", f"{out}.md") if markdown else ()
    return (PY, "-m", "nucseg.cli", "evaluate", "--model", run, "--dataset", dataset,
            "--overwrite", "--json", f"{out}.json", *tables)  # fmt: skip


CANDIDATES = ("stain-nonorm", "stain-nonorm-long", "stain-norm", "stain-norm-long",
              "stain-normafter-long", "stain-soup", "stain-norm-xl", "stain-normafter-xl",
              "stain-soup-xl")  # fmt: skip
TESTED = ("stain-nonorm-long", "stain-normafter-long", "stain-soup")
TILES = "256/0.25,256/0.125,256/0.0625,256/0.03125,512/0.046875"

#: Settings counted by benchmarks/pixel_budget.py (tile, overlap, halo, chunk).
BUDGET_SETTINGS = (
    "tile=256,overlap=0.03125,halo=128",  # nucseg slide's defaults (8 pixels of overlap)
    "tile=256,overlap=0.03125,halo=64",
    "tile=256,overlap=0.03125,halo=128,chunk=8160",
    "tile=512,overlap=0.015625,halo=128",
    "tile=256,overlap=0.25,halo=128",  # the bundled model's own overlap (segment, evaluate)
)

#: Results kept as they were written, never regenerated: the withdrawn fifth-round runs, which
#: drew the wrong validation images (results/stain/withdrawn/README.md).
FROZEN = ("results/stain/withdrawn/",)

JOBS: dict[str, Job] = {
    "classical": Job(
        (("bash", "benchmarks/run_classical.sh"),),
        tuple(
            f"results/classical/{m}_{d}.json"
            for m in ("otsu", "watershed", "fiji")
            for d in ("monuseg-breast", "tnbc")
        ),  # fmt: skip
        model=False,
    ),
    "classical-tuning": Job(
        ((PY, "benchmarks/tune_classical.py", "--out", "results/classical/tuning.json"),),
        ("results/classical/tuning.json",),
        model=False,
    ),
    "unet": Job(
        (("bash", "results/unet/make_results.sh"),),
        (
            "results/unet/default_monuseg-breast.json",
            "results/unet/default_tnbc.json",
            "results/unet/speed.json",
        ),  # fmt: skip
    ),
    "slide-tiles": Job(
        ((PY, "benchmarks/slide_tiles.py", "--settings", TILES),), ("results/slide/tiles.json",)
    ),
    "slide-seams": Job(((PY, "benchmarks/slide_seams.py"),), ("results/slide/seams.json",)),
    "stain-default": Job(
        (_stain("new-default", model="default"), (PY, "benchmarks/bench_stain.py", "--table")),
        ("results/stain/new-default.json",),
    ),
    "stain-fiji": Job(
        (_stain("fiji", method="fiji"), (PY, "benchmarks/bench_stain.py", "--table")),
        ("results/stain/fiji.json",),
        model=False,
    ),
    "swap-detector": Job(
        ((PY, "benchmarks/swap_detector.py"),), ("results/stain/swap_detector.json",), model=False
    ),
    "cohort": Job(((PY, "benchmarks/bench_cohort.py"),), ("results/cohort/bench.json",)),
    "metrics": Job(
        (
            (PY, "benchmarks/bench_metrics.py"),
            (PY, "benchmarks/bench_metrics.py", "--large"),
            (PY, "benchmarks/bench_geometry.py"),
        ),  # fmt: skip
        (
            "results/benchmarks/metrics.json",
            "results/benchmarks/metrics_large.json",
            "results/benchmarks/geometry.json",
        ),  # fmt: skip
        model=False,
    ),
    "backend-agreement": Job(
        ((PY, "benchmarks/backend_agreement.py"),), ("results/backends/agreement.json",)
    ),
    "int8": Job(
        ((PY, "benchmarks/bench_int8.py", "--out", "results/backends/int8.json"),),
        ("results/backends/int8.json",),
    ),
    "slide-engine": Job(
        ((PY, "benchmarks/bench_slide.py", "--out", "results/slide/bench_engine.json"),),
        ("results/slide/bench_engine.json",),
    ),
    "pixel-budget": Job(
        ((PY, "benchmarks/pixel_budget.py", *(f"--setting={s}" for s in BUDGET_SETTINGS)),),
        ("results/slide/pixel_budget.json",),
        model=False,
    ),
    "chunk-profile-compare": Job(
        ((PY, "benchmarks/profile_chunk_compare.py", "--base", "08d940f", "--rounds", "3"),),
        ("results/slide/chunk_profile_compare.json",),
    ),
    "openvino-settings": Job(
        (
            (
                PY,
                "benchmarks/bench_openvino_settings.py",
                "--tiles",
                "64",
                "--rounds",
                "3",
                "--out",
                "results/slide/openvino_settings.json",
            ),
        ),  # fmt: skip
        ("results/slide/openvino_settings.json",),
    ),
    "viewer": Job(((PY, "benchmarks/bench_viewer.py"),), ("results/viewer/bench.json",)),
    "generalisation": Job(
        (
            (
                PY,
                "benchmarks/select_multisource.py",
                "--candidate",
                "ms-types=runs/ms-types",
                "--overwrite",
            ),
            (
                PY,
                "-m",
                "nucseg.cli",
                "evaluate",
                "--dataset",
                "consep-test",
                "--overwrite",
                "--json",
                "results/generalisation/default_consep-test.json",
            ),
        ),  # fmt: skip
        (
            "results/generalisation/selection.json",
            "results/generalisation/validation_default.json",
            "results/generalisation/validation_ms-types.json",
            "results/generalisation/default_consep-test.json",
        ),  # fmt: skip
        record=True,
        needs=("runs/ms-types",),
    ),
    "types": Job(
        ((PY, "benchmarks/score_types.py", "runs/ms-types", "--overwrite"),),
        ("results/types/ms-types.json",),
        record=True,
        needs=("runs/ms-types",),
    ),
    "generalisation-round2": Job(
        (
            (
                PY,
                "benchmarks/select_multisource.py",
                "--candidate",
                "ms-types=runs/ms-types",
                "--candidate",
                "ms-types-2=runs/ms-types-2",
                "--out-name",
                "selection-round2",
                "--prefix",
                "round2",
                "--overwrite",
            ),
        ),  # fmt: skip
        (
            "results/generalisation/selection-round2.json",
            "results/generalisation/round2_default.json",
            "results/generalisation/round2_ms-types.json",
            "results/generalisation/round2_ms-types-2.json",
        ),  # fmt: skip
        record=True,
        needs=("runs/ms-types", "runs/ms-types-2"),
    ),
    "types-2": Job(
        ((PY, "benchmarks/score_types.py", "runs/ms-types-2", "--overwrite"),),
        ("results/types/ms-types-2.json",),
        record=True,
        needs=("runs/ms-types-2",),
    ),
    # A selection round's "default" is the bundled default of the checkout it runs in: these
    # records were made when stain-soup was the default (docs/figures.json, previous_default).
    "generalisation-round3": Job(
        tuple(
            (
                PY,
                "benchmarks/interpolate_weights.py",
                "src/nucseg/data/models/stain-soup",
                "runs/ms-types-2",
                "--alpha",
                a,
                "--out",
                f"runs/wise-{a}",
                "--overwrite",
            )
            for a in ("0.3", "0.5", "0.7")
        )
        + (
            (
                PY,
                "benchmarks/select_multisource.py",
                "--candidate",
                "ms-types-2=runs/ms-types-2",
                *(
                    x
                    for a in ("0.3", "0.5", "0.7")
                    for x in ("--candidate", f"wise-{a}=runs/wise-{a}")
                ),
                "--out-name",
                "selection-round3",
                "--prefix",
                "round3",
                "--overwrite",
            ),
        ),  # fmt: skip
        (
            "results/generalisation/selection-round3.json",
            *(
                f"results/generalisation/round3_{n}.json"
                for n in ("default", "ms-types-2", "wise-0.3", "wise-0.5", "wise-0.7")
            ),
        ),  # fmt: skip
        record=True,
        needs=("runs/ms-types-2",),
    ),
    "generalisation-round4": Job(
        (
            (
                PY,
                "benchmarks/interpolate_weights.py",
                "runs/wise-0.5",
                "runs/ms-types-3",
                "--alpha",
                "0.5",
                "--out",
                "runs/wise4-0.5",
                "--overwrite",
            ),
            (
                PY,
                "benchmarks/select_multisource.py",
                "--rule",
                "monuseg",
                "--candidate",
                "ms-types-3=runs/ms-types-3",
                "--candidate",
                "wise4-0.5=runs/wise4-0.5",
                "--out-name",
                "selection-round4",
                "--prefix",
                "round4",
                "--overwrite",
            ),
        ),  # fmt: skip
        (
            "results/generalisation/selection-round4.json",
            *(
                f"results/generalisation/round4_{n}.json"
                for n in ("default", "ms-types-3", "wise4-0.5")
            ),
        ),  # fmt: skip
        record=True,
        needs=("runs/wise-0.5", "runs/ms-types-3"),
    ),
    "generalisation-round3-tests": Job(
        (
            *(
                _evaluate(
                    "runs/wise-0.5",
                    d,
                    f"results/generalisation/round3/wise-0.5_{d}",
                    markdown=False,
                )
                for d in ("monuseg-breast", "tnbc")
            ),
            (PY, "benchmarks/score_types.py", "runs/wise-0.5", "--overwrite"),
        ),  # fmt: skip
        (
            "results/generalisation/round3/wise-0.5_monuseg-breast.json",
            "results/generalisation/round3/wise-0.5_tnbc.json",
            "results/types/wise-0.5.json",
        ),  # fmt: skip
        record=True,
        needs=("runs/wise-0.5",),
    ),
    "loso": Job(
        (
            # the protocol's baseline: the default of its writing, now bundled as stain-soup
            *(
                _evaluate(
                    "stain-soup", d, f"results/generalisation/loso/default_{d}", markdown=False
                )
                for d in ("monuseg-nonbreast", "consep-train", "cpm15", "dsb2018-he")
            ),
            *(
                _evaluate(
                    f"runs/{run}", d, f"results/generalisation/loso/{run}_{d}", markdown=False
                )
                for run, d in (
                    ("loso-monuseg", "monuseg-nonbreast"),
                    ("loso-consep", "consep-train"),
                    ("loso-consep", "consep-test"),
                    ("loso-cpm15", "cpm15"),
                    ("loso-dsb", "dsb2018-he"),
                )
            ),
            (PY, "benchmarks/loso_table.py"),
        ),  # fmt: skip
        (
            *(
                f"results/generalisation/loso/{name}.json"
                for name in (
                    "default_monuseg-nonbreast",
                    "default_consep-train",
                    "default_cpm15",
                    "default_dsb2018-he",
                    "loso-monuseg_monuseg-nonbreast",
                    "loso-consep_consep-train",
                    "loso-consep_consep-test",
                    "loso-cpm15_cpm15",
                    "loso-dsb_dsb2018-he",
                )
            ),
            "results/generalisation/loso/table.json",
        ),  # fmt: skip
        record=True,
        needs=("runs/loso-monuseg", "runs/loso-consep", "runs/loso-cpm15", "runs/loso-dsb"),
    ),
    "stain-candidates": Job(
        tuple(_stain(n, model=f"runs/{n}") for n in ("base32", *CANDIDATES))
        + ((PY, "benchmarks/select_stain.py"),),
        (
            "results/stain/base32.json",
            *(f"results/stain/{n}.json" for n in CANDIDATES),
            "results/stain/selection.json",
        ),  # fmt: skip
        record=True,
        needs=("runs/base32", *(f"runs/{n}" for n in CANDIDATES)),
    ),
    "stain-previous-default": Job(
        (
            _stain("old-default", model="runs/old-default"),
            (
                "bash",
                "-c",
                "git worktree add --detach /tmp/nucseg-a65c98b a65c98b && "
                f"PYTHONPATH=/tmp/nucseg-a65c98b/src {PY} benchmarks/bench_stain.py --model "
                "runs/old-default --name old-default-old-normaliser --overwrite; "
                "git worktree remove --force /tmp/nucseg-a65c98b",
            ),
        ),  # fmt: skip
        ("results/stain/old-default.json", "results/stain/old-default-old-normaliser.json"),
        record=True,
        needs=("runs/old-default",),
    ),
    "stain-tests": Job(
        tuple(
            _evaluate(f"runs/{n}", d, f"results/stain/test/{n}_{d}")
            for n in TESTED
            for d in ("monuseg-breast", "tnbc")
        ),  # fmt: skip
        tuple(
            f"results/stain/test/{n}_{d}.json" for n in TESTED for d in ("monuseg-breast", "tnbc")
        ),  # fmt: skip
        record=True,
        needs=tuple(f"runs/{n}" for n in TESTED),
    ),
}


def dirty_files() -> list[str]:
    """Files outside ``results/`` that differ from the commit (modified or untracked)."""
    sys.path.insert(0, str(ROOT / "src"))
    from nucseg.provenance import code_state

    state = code_state()
    if state["commit"] is None:
        raise SystemExit("regenerate: error: not a git checkout; a result must name its commit")
    return [n for n in state["modified"] + state["untracked"] if not n.startswith("results/")]


def chosen_names(only: list[str], *, no_model: bool = False) -> list[str]:
    """The jobs to run: ``only`` (checked), else every job but the records (and, with
    ``no_model``, but those that need the network)."""
    unknown = [n for n in only if n not in JOBS]
    if unknown:
        raise KeyError(f"unknown job(s) {', '.join(unknown)}; valid: {', '.join(JOBS)}")
    if only:
        return list(dict.fromkeys(only))
    return [n for n, j in JOBS.items() if not j.record and not (no_model and j.model)]


def describe(name: str, job: Job) -> str:
    kind = "record" if job.record else ("model" if job.model else "no model")
    lines = [f"{name} ({kind}): {', '.join(job.outputs)}"]
    lines += ["    " + " ".join("python" if w == PY else w for w in c) for c in job.commands]
    if job.needs:
        lines.append(f"    needs: {', '.join(job.needs)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="print the jobs and exit")
    parser.add_argument("--only", action="append", default=[], metavar="NAME", help="this job")
    parser.add_argument("--no-model", action="store_true", help="only jobs that need no network")
    args = parser.parse_args(argv)
    try:
        names = chosen_names(args.only, no_model=args.no_model)
    except KeyError as err:
        print(f"regenerate: error: {err.args[0]}", file=sys.stderr)
        return 2
    if args.list:
        print("\n".join(describe(n, JOBS[n]) for n in JOBS))
        return 0
    dirty = dirty_files()
    if dirty:
        print(f"regenerate: error: modified files outside results/: {', '.join(dirty)}; "
              "commit or stash them first", file=sys.stderr)  # fmt: skip
        return 2
    missing = [f"{n}: {p}" for n in names for p in JOBS[n].needs if not (ROOT / p).is_dir()]
    if missing:
        print(f"regenerate: error: missing run folders ({'; '.join(missing)})", file=sys.stderr)
        return 2
    for name in names:
        for command in JOBS[name].commands:
            print(f"[{name}] {' '.join(command)}", flush=True)
            start = time.perf_counter()
            done = subprocess.run(command, cwd=ROOT)
            if done.returncode != 0:
                print(f"regenerate: error: [{name}] exit status {done.returncode}", file=sys.stderr)
                return 1
            print(f"[{name}] done in {time.perf_counter() - start:.0f} s", flush=True)
    return subprocess.run([PY, "benchmarks/figures.py"], cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main())
