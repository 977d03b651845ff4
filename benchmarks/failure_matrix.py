"""The failure matrix of docs/failures.md: every case of tests/test_failures.py, before and after.

    git worktree add --detach /tmp/before-49fea0f 49fea0f   # before issue 18's changes
    python benchmarks/failure_matrix.py --before /tmp/before-49fea0f/src --out matrix.md

Runs each case of ``tests/test_failures.py`` (:data:`CASES`) through the command line twice: with
``--before``'s source first on ``PYTHONPATH`` and with this checkout's, and writes one Markdown row
per case: what the command printed (the ``nucseg: error:`` line, or the traceback's last line),
its exit status, and whether a file's code ran, a temporary was left or an existing file changed.
Rows already in ``--out`` (an interrupted run) are kept; a command is stopped after 300 s.
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

from test_failures import CASES, MARKER, READ_ONLY, Case, prepare  # noqa: E402

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
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        argv = prepare(case, tmp)
        before = _snapshot(tmp)
        code = READ_ONLY if case.read_only is not None else MAIN
        extra = [str(tmp / case.read_only)] if case.read_only is not None else []
        try:
            done = subprocess.run(
                [sys.executable, "-c", code, *extra, *argv],
                capture_output=True,
                text=True,
                env={**os.environ, "PYTHONPATH": str(source), "NUCSEG_DATA": DATA},
                cwd=tmp,
                timeout=TIMEOUT_S,
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
        text = shown.replace(str(tmp), "T").replace("|", "\\|")
        return f"exit {done.returncode}: {text}" + "".join(f"; {n}" for n in notes)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _command(case: Case) -> str:
    with tempfile.TemporaryDirectory() as name:
        argv = prepare(case, Path(name))
        return "nucseg " + " ".join(argv).replace(name, "T")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="src/ of the older checkout")
    parser.add_argument("--out", type=Path, required=True, help="Markdown file to write")
    args = parser.parse_args()
    done = {}  # rows of an earlier, interrupted run of this script: kept
    if args.out.is_file():
        for line in args.out.read_text().splitlines()[2:]:
            done[line.split(" | ")[0].removeprefix("| ")] = line
    rows = ["| case | command | before | after |", "|---|---|---|---|"]
    for case in CASES:
        if case.name not in done:
            cells = [case.name, f"`{_command(case)}`", outcome(case, args.before),
                     outcome(case, ROOT / "src")]  # fmt: skip
            done[case.name] = "| " + " | ".join(cells) + " |"
            print(done[case.name], flush=True)
        rows.append(done[case.name])
        args.out.write_text("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
