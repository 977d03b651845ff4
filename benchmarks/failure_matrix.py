"""The failure matrix of docs/failures.md: every case of tests/test_failures.py, before and after.

    git worktree add /tmp/before 49fea0f     # the commit before issue 18's changes
    python benchmarks/failure_matrix.py --before /tmp/before/src --out docs/failures-matrix.md

Runs each case of ``tests/test_failures.py`` (:data:`CASES`) through the command line twice: with
``--before``'s source first on ``PYTHONPATH`` and with this checkout's, and writes one Markdown row
per case: what the command printed (the ``nucseg: error:`` line, or the traceback's last line),
its exit status, and whether a file's code ran, a temporary was left or an existing file changed.
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


def _snapshot(folder: Path) -> dict[Path, str]:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}


def outcome(case: Case, source: Path) -> str:
    """One table cell: how ``case`` ends with the package at ``source``."""
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        argv = prepare(case, tmp)
        before = _snapshot(tmp)
        code = READ_ONLY if case.read_only is not None else MAIN
        extra = [str(tmp / case.read_only)] if case.read_only is not None else []
        done = subprocess.run(
            [sys.executable, "-c", code, *extra, *argv],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(source)},
            cwd=tmp,
            timeout=600,
        )
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        if "Traceback" in done.stderr:
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
    rows = ["| case | command | before | after |", "|---|---|---|---|"]
    for case in CASES:
        cells = [case.name, f"`{_command(case)}`", outcome(case, args.before),
                 outcome(case, ROOT / "src")]  # fmt: skip
        rows.append("| " + " | ".join(cells) + " |")
        print(rows[-1], flush=True)
    args.out.write_text("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
