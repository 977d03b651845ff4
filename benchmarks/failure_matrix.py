"""The failure matrices of docs/failures.md: the cases of tests/test_failures.py before and
after, and the 67 whole-slide cases of issue 29 judged by the rules.

    git worktree add --detach /tmp/before-49fea0f 49fea0f   # before issue 18's changes
    python benchmarks/failure_matrix.py --before /tmp/before-49fea0f/src --out matrix.md
    python benchmarks/failure_matrix.py --slides --work /tmp/slide-matrix --out slides.md

The first runs each case of ``tests/test_failures.py`` (:data:`CASES`) through the command line
twice: with ``--before``'s source first on ``PYTHONPATH`` and with this checkout's, and writes one
Markdown row per case: what the command printed (the ``nucseg: error:`` line, or the traceback's
last line), its exit status, and whether a file's code ran, a temporary was left, an existing file
changed or the case's own check failed. A case whose older behaviour is known to be harmful (a
runaway of many GB) is not run before; its row says why. The second (``--slides``) writes the
slides of issue 29's matrix, smaller, into ``--work`` and runs its cases with this checkout only
(:mod:`_slide_cases`): each row says what the commands did and whether that is what the rules of
docs/failures.md say. Rows already in ``--out`` (an interrupted run) are kept; a command is
stopped after 300 s.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from slide_cases import slide_cases  # noqa: E402
from test_failures import BUNDLED, CASES, MARKER, READ_ONLY, Case, limits, prepare  # noqa: E402

MAIN = "import sys; from nucseg.cli import main; sys.exit(main())"
TIMEOUT_S = 300
#: The datasets, so that an older version gets as far as it would for a user who has them.
DATA = os.environ.get("NUCSEG_DATA", str(ROOT.parent / "shared" / "datasets"))


def _snapshot(folder: Path) -> dict[Path, str]:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}


def outcome(case: Case, source: Path) -> str:
    """One table cell: how ``case`` ends with the package at ``source``."""
    if not (source / "nucseg" / "cli.py").is_file():  # else the installed nucseg would run
        raise SystemExit(f"{source} holds no nucseg package")
    if case.before is not None and source != ROOT / "src":
        return case.before
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        argv = prepare(case, tmp)
        before = _snapshot(tmp)
        code = READ_ONLY if case.read_only is not None else MAIN
        extra = [str(tmp / case.read_only)] if case.read_only is not None else []
        try:
            done = subprocess.run(
                ["nice", "-n", "10", sys.executable, "-c", code, *extra, *argv],
                capture_output=True,
                text=True,
                env={**os.environ, "PYTHONPATH": str(source), "NUCSEG_DATA": DATA},
                cwd=tmp,
                timeout=TIMEOUT_S,
                preexec_fn=limits(case),
            )
        except subprocess.TimeoutExpired:
            return f"still running after {TIMEOUT_S} s (stopped)"
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        if done.returncode == 0:
            shown = "no error"
        elif "Traceback" in done.stderr:
            shown = "traceback: " + lines[-1]
        else:
            errors = [line for line in lines if line.startswith("nucseg: error:")]
            shown = errors[0] if errors else (lines[0] if lines else "(nothing printed)")
            if len(errors) > 1:
                shown += f" (+{len(errors) - 1} more)"
        notes = []
        if (tmp / MARKER).exists():
            notes.append("**the file's code ran**")
        if any("nucseg-tmp" in p.name or ".tmp" in p.name for p in tmp.rglob("*")):
            notes.append("temporary left")
        if any(not p.is_file() or _digest(p) != d for p, d in before.items()):
            notes.append("an existing file changed")
        if case.check is not None:
            try:
                case.check(tmp, done)
            except (AssertionError, OSError, ValueError, KeyError) as err:
                notes.append(f"**its check failed** ({type(err).__name__} {err})"[:200])
        text = f"exit {done.returncode}: {shown}" + "".join(f"; {n}" for n in notes)
        return text.replace(str(tmp), "T").replace("|", "\\|").replace("\n", " ")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _command(case: Case) -> str:
    with tempfile.TemporaryDirectory() as name:
        argv = prepare(case, Path(name))
        return "nucseg " + " ".join(argv).replace(name, "T")


def slide_matrix(work: Path, out: Path, only: set[int] | None) -> None:
    """Issue 29's whole-slide cases, judged by the rules (see the module docstring)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _slide_cases import CASES as SLIDE_CASES
    from _slide_matrix import Ctx, make_slides

    slides = work / "slides"
    if not (slides / "halfmag.tif").is_file():
        make_slides(work, Path(DATA))
    done = _rows(out)
    rows = ["| # | case | what the rules want | observed | holds |", "|---|---|---|---|---|"]
    for number, name, rule, run in SLIDE_CASES:
        if str(number) not in done and (only is None or number in only):
            holds, observed = run(Ctx(work, slides, number))
            observed = observed.replace(str(work), "W").replace("|", "\\|").replace("\n", " ")
            cells = [str(number), name, rule, observed, "yes" if holds else "**NO**"]
            done[str(number)] = "| " + " | ".join(cells) + " |"
            print(done[str(number)], flush=True)
        if str(number) in done:
            rows.append(done[str(number)])
        out.write_text("\n".join(rows) + "\n")


def _rows(out: Path) -> dict[str, str]:
    """Rows of an earlier, interrupted run of this script, by their first cell: kept."""
    done = {}
    if out.is_file():
        for line in out.read_text().splitlines()[2:]:
            done[line.split(" | ")[0].removeprefix("| ")] = line
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, help="src/ of the older checkout")
    parser.add_argument("--out", type=Path, required=True, help="Markdown file to write")
    parser.add_argument("--slides", action="store_true", help="issue 29's whole-slide cases")
    parser.add_argument("--work", type=Path, help="scratch folder of --slides (slides, runs)")
    parser.add_argument("--only", help="with --slides: these case numbers, e.g. 26,31")
    parser.add_argument(
        "--slide-cases", action="store_true", help="with --before: only the slide cases"
    )
    args = parser.parse_args()
    if args.slides:
        if args.work is None:
            parser.error("--slides needs --work")
        only = None if args.only is None else {int(n) for n in args.only.split(",")}
        return slide_matrix(args.work, args.out, only)
    if args.before is None:
        parser.error("give --before (or --slides)")
    done = _rows(args.out)
    rows = ["| case | command | before | after |", "|---|---|---|---|"]
    cases = CASES
    if args.slide_cases:
        names = {c.name for c in slide_cases(Case, BUNDLED)}
        cases = [c for c in CASES if c.name in names]
    for case in cases:
        if case.name not in done:
            cells = [case.name, f"`{_command(case)}`", outcome(case, args.before),
                     outcome(case, ROOT / "src")]  # fmt: skip
            done[case.name] = "| " + " | ".join(cells) + " |"
            print(done[case.name], flush=True)
        rows.append(done[case.name])
        args.out.write_text("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
