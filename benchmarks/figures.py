"""Check every figure the README and docs quote against the results file they name.

    python benchmarks/figures.py            # one line per problem; exit status 1 if any

The convention, kept simple so the docs stay plain prose:

* A paragraph of README.md or docs/*.md that names a results file (``results/.../x.json``, or a
  ``.md`` beside its ``.json``, or a folder: its JSON files) *quotes* those files. Every decimal
  number in it (``0.6114``, ``1.13``; not code blocks) must be one of:

  - a value of the file named nearest to it, rounded to the decimals written (``0.6114`` is any
    value in [0.61135, 0.61145)), found by searching the file's numbers. Nearest: the files named
    in the number's sentence or table row; if none, the last name before it in the paragraph;
    if none, the first after it. A value of another file of the paragraph does not count;
  - a figure registered in ``docs/figures.json`` under ``derived``: a difference, ratio or sum
    of values at JSON paths (``summary.aji``) of a quoted file, for figures no file holds as is;
  - a number registered under ``not_results`` with its reason (the paper's figures, settings).

  Files under ``results/archive/`` (stale or unclean results kept for the record) may be linked
  but are never a source: a number next to them alone is an error.

* Every quoted JSON must be clean (a commit, no modified or untracked file outside ``results/``),
  and a result of a model must carry its weights' SHA-256; a result of the bundled default model
  must carry the current bundled weights' SHA-256 (a new model makes its figures stale here).

``docs/figures.json``'s ``previous_default`` lists the records of decisions taken with an earlier
default model (selection rounds, the baselines a protocol named before training), which are never
regenerated: each must carry the weights of the bundled model it names (the earlier default, kept
under that name).

``docs/figures.json``'s ``known_stale`` lists quoted files whose figures are out of date and are
waiting for ``python benchmarks/regenerate.py`` (see its ``--list``): made with other weights
(an error unless listed), or before ``since``, the commit that changed what they measure. Each
is reported as a warning; an entry whose file is no longer stale (current weights, or regenerated
at or after ``since``) is an error, so the list only shrinks.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
REGISTRY = Path("docs/figures.json")
BUNDLED = Path("src/nucseg/data/models/default")
ARCHIVE = Path("results/archive")
NUMBER = re.compile(r"(?<![\w.\-/])-?\d+\.\d+(?![\w.]*\d)(?!\w)")
SOURCE = re.compile(r"results/[\w./-]*[\w/]")
SENTENCE_END = re.compile(r"(?<=[.!?])\)?\s+(?=[A-Z(\[*_`])")
WEIGHTS = ("model.safetensors", "model.pt")


def docs(root: Path = ROOT) -> list[Path]:
    """README.md and docs/*.md, relative to ``root``."""
    return [Path("README.md"), *sorted(p.relative_to(root) for p in (root / "docs").glob("*.md"))]


def paragraphs(text: str) -> Iterator[tuple[int, str]]:
    """``(first line number, text)`` of each paragraph (blank-line separated) or list item, code
    blocks left out."""
    start, lines, fenced = 1, [], False
    for number, line in enumerate(text.splitlines() + [""], start=1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            continue
        if re.match(r"\s*([-*]|\d+\.) ", line) and lines:  # a list item: a paragraph of its own
            yield start, "\n".join(lines)
            lines = []
        if line.strip():
            if not lines:
                start = number
            lines.append(line)
        elif lines:
            yield start, "\n".join(lines)
            lines = []


def quoted_files(paragraph: str, root: Path = ROOT) -> list[Path]:
    """The JSON results files a paragraph names (relative to ``root``)."""
    found: list[Path] = []
    for _, files in links(paragraph, root):
        found += [f for f in files if f not in found]
    return found


def links(paragraph: str, root: Path = ROOT) -> list[tuple[int, list[Path]]]:
    """``(offset, JSON results files)`` of each results name in a paragraph, in order; a name of
    a script, table or figure with no JSON to read is left out."""
    found = []
    for match in SOURCE.finditer(paragraph):
        path = root / match.group().rstrip("/.")
        if path.suffix == ".json":
            candidates = [path]
        elif path.suffix == ".md" and path.with_suffix(".json").is_file():
            candidates = [path.with_suffix(".json")]
        elif path.suffix == ".md":
            candidates = [c for c in sorted(path.parent.glob("*.json")) if _has_provenance(c)]
        elif path.is_dir():  # a folder's results: its JSON files that record a provenance
            candidates = [c for c in sorted(path.glob("*.json")) if _has_provenance(c)]
        elif not path.exists():
            candidates = [path]  # reported as missing
        else:
            candidates = []  # a script, table or figure: no numbers to read
        if candidates:
            found.append((match.start(), [c.relative_to(root) for c in candidates]))
    return found


def sentences(paragraph: str) -> list[tuple[int, int]]:
    """``(start, end)`` offsets of each sentence of a paragraph; a table row is one."""
    spans, offset = [], 0
    for line in paragraph.splitlines(keepends=True):
        if line.lstrip().startswith("|") or not spans or spans[-1][2]:
            spans.append([offset, offset + len(line), line.lstrip().startswith("|")])
        else:
            spans[-1][1] = offset + len(line)
        offset += len(line)
    cut = []
    for start, end, row in spans:
        ends = [] if row else [m.end() for m in SENTENCE_END.finditer(paragraph, start, end)]
        cut += list(zip([start, *ends], [*ends, end], strict=True))
    return cut


def nearest_files(paragraph: str, offset: int, named: list[tuple[int, list[Path]]]) -> list[Path]:
    """The files a number at ``offset`` quotes: those named in its sentence or table row, else
    the nearest name before it in the paragraph, else the nearest after it."""
    start, end = next((s, e) for s, e in sentences(paragraph) if s <= offset < e)
    same = [f for at_, files in named if start <= at_ < end for f in files]
    before = [files for at_, files in named if at_ < offset]
    after = [files for at_, files in named if at_ > offset]
    return list(dict.fromkeys(same or (before[-1] if before else after[0] if after else [])))


def _has_provenance(file: Path) -> bool:
    try:
        return provenance_of(json.loads(file.read_text())) is not None
    except (OSError, ValueError):
        return True  # reported when read


def numbers_of(data: Any) -> Iterator[float]:
    """Every number in a JSON document."""
    if isinstance(data, bool):
        return
    if isinstance(data, int | float):
        yield float(data)
    elif isinstance(data, dict):
        for value in data.values():
            yield from numbers_of(value)
    elif isinstance(data, list):
        for value in data:
            yield from numbers_of(value)


def matches(figure: str, value: float) -> bool:
    """Whether ``value`` rounds to ``figure`` at the decimals written (half-way cases either)."""
    decimals = len(figure.split(".")[1])
    half = 0.5 * 10.0**-decimals
    return math.isfinite(value) and abs(value - float(figure)) <= half * (1 + 1e-9)


def at(data: Any, path: str) -> Any:
    """The value at a dotted JSON path (``summary.ratios.jpeg-25``; list items by index)."""
    for key in path.split("."):
        data = data[int(key)] if isinstance(data, list) else data[key]
    return data


def derived_value(entry: dict[str, Any], load: Any) -> float:
    """A registered figure: ``op`` (difference, ratio, sum, value) of the values at ``paths``."""
    values = [float(at(load(Path(f)), p)) for f, p in entry["paths"]]
    op = entry.get("op", "value")
    if op == "value":
        return values[0]
    if op == "difference":
        return values[0] - values[1]
    if op == "ratio":
        return values[0] / values[1]
    if op == "sum":
        return sum(values)
    raise ValueError(f"{REGISTRY}: unknown op {op!r} (valid: value, difference, ratio, sum)")


def provenance_of(data: Any) -> dict[str, Any] | None:
    """The first provenance block of a results JSON (top-level, under ``provenance``, or deeper)."""
    blocks = provenances(data)
    return blocks[0] if blocks else None


def provenances(data: Any, depth: int = 3) -> list[dict[str, Any]]:
    """Every provenance block (a dict with ``commit`` and ``command``) down to ``depth`` levels."""
    if not isinstance(data, dict) or depth < 0:
        return []
    if "commit" in data and "command" in data:
        return [data]
    return [b for v in data.values() for b in provenances(v, depth - 1)]


def weights_hashes(data: Any, trail: str = "") -> Iterator[tuple[str, str]]:
    """``(where, sha256)`` of every weights hash recorded in a JSON document."""
    if isinstance(data, dict):
        for key, value in data.items():
            here = f"{trail}.{key}" if trail else str(key)
            if key in WEIGHTS and isinstance(value, str) and len(value) == 64:
                yield here, value
            else:
                yield from weights_hashes(value, here)
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from weights_hashes(value, f"{trail}.{i}")


def uses_model(data: Any) -> bool:
    """Whether a result comes from a network: it names a model or records model files."""
    if not isinstance(data, dict):
        return False
    prov = provenance_of(data) or {}
    return bool(data.get("model") or prov.get("models") or data.get("model_sha256"))


def _elsewhere(where: str, root: Path) -> bool:
    """Whether a weights hash's trail names a model folder of another checkout (an absolute path
    outside ``root``: a baseline's worktree, as bench_slide.py's b9e4836 under /tmp)."""
    return any(
        part.startswith("/") and not Path(part).is_relative_to(root)
        for part in where.split(".")
        if "models/" in part
    )


def source_problems(
    file: Path, data: Any, bundled_sha: str | None, root: Path = ROOT
) -> tuple[list[str], bool]:
    """Problems of one quoted results file, and whether it is stale for the bundled model (a
    baseline's model, from another checkout, is that checkout's: never stale)."""
    blocks = provenances(data)
    if not blocks:
        return [f"{file}: no provenance (commit, command) recorded"], False
    problems = []
    for prov in blocks:
        if not prov.get("commit"):
            problems.append(f"{file}: no commit recorded")
        changed = [
            n for n in (prov.get("modified") or []) + (prov.get("untracked") or [])
            if not n.startswith("results/")
        ]  # fmt: skip
        if changed or (prov.get("modified") is None and prov.get("dirty")):
            what = ", ".join(changed) or "its dirty flag"
            problems.append(f"{file}: written from a modified tree ({what})")
    hashes = list(weights_hashes(data))
    if uses_model(data) and not hashes:
        problems.append(f"{file}: a model's result without the weights' SHA-256")
    bundled = [
        h
        for where, h in hashes
        if ("models/default" in where or data.get("model") == "default")
        and not _elsewhere(where, root)
    ]
    stale = bundled_sha is not None and any(h != bundled_sha for h in bundled)
    return problems, stale


def quoted_results(root: Path = ROOT) -> set[Path]:
    """Every results JSON that README.md and docs/*.md quote (the archive left out)."""
    found: set[Path] = set()
    for doc in docs(root):
        for _, text in paragraphs((root / doc).read_text()):
            found.update(f for f in quoted_files(text, root) if not f.is_relative_to(ARCHIVE))
    return found


def check(root: Path = ROOT) -> tuple[list[str], list[str]]:
    """``(errors, warnings)`` of the figures of README.md and docs/*.md."""
    from nucseg.provenance import file_sha256

    registry = json.loads((root / REGISTRY).read_text())
    cache: dict[Path, Any] = {}

    def load(file: Path) -> Any:
        if file not in cache:
            cache[file] = json.loads((root / file).read_text())
        return cache[file]

    used: set[int] = set()
    errors, quoted = _check_figures(root, registry, load, used)
    weights = root / BUNDLED / "model.safetensors"
    bundled_sha = file_sha256(weights) if weights.is_file() else None
    stale_files = set()
    for file in sorted(quoted):
        problems, stale = source_problems(file, load(file), bundled_sha, root)
        errors += problems
        if stale:
            stale_files.add(str(file))
    errors += _check_previous(root, registry, stale_files, load)
    stale_errors, warnings = _check_stale(root, registry, stale_files, load)
    errors += stale_errors
    for i, entry in enumerate(registry.get("derived", []) + registry.get("not_results", [])):
        if i not in used:
            errors.append(f"{REGISTRY}: {entry['doc']}: {entry['figure']} ({entry['context']!r}) "
                          "is no longer quoted: remove it")  # fmt: skip
    return errors, warnings


def _check_figures(
    root: Path, registry: dict[str, Any], load: Any, used: set[int]
) -> tuple[list[str], set[Path]]:
    """Errors of every decimal number in a paragraph that quotes results; the files quoted."""
    errors: list[str] = []
    quoted: set[Path] = set()
    for doc in docs(root):
        for line, text in paragraphs((root / doc).read_text()):
            named = links(text, root)
            files = [f for f in quoted_files(text, root) if not f.is_relative_to(ARCHIVE)]
            missing = [f for f in files if not (root / f).is_file()]
            errors += [f"{doc}:{line}: {f}: no such results file" for f in missing]
            quoted.update(f for f in files if f not in missing)
            for match in NUMBER.finditer(text) if named else ():
                figure, where = match.group(), line + text.count("\n", 0, match.start())
                entry = _registered(registry, doc, figure, text, used)
                if entry is not None and "paths" in entry:  # derived: its own value must match
                    value = derived_value(entry, load)
                    if not matches(figure, value):
                        errors.append(f"{doc}:{where}: {figure} but {entry['op']} is {value:.6g}")
                elif entry is None:
                    nearest = nearest_files(text, match.start(), named)
                    errors += _unmatched(doc, where, figure, nearest, missing, load)
    return errors, quoted


def _unmatched(
    doc: Path, line: int, figure: str, nearest: list[Path], missing: list[Path], load: Any
) -> list[str]:
    """The error of a quoted number that no value of its nearest results file rounds to."""
    sources = [f for f in nearest if not f.is_relative_to(ARCHIVE) and f not in missing]
    if any(matches(figure, v) for f in sources for v in numbers_of(load(f))):
        return []
    what = ", ".join(map(str, nearest)) + (
        " (the archive is never a source)" if not sources else ""
    )
    return [f"{doc}:{line}: {figure} matches no value of its nearest results file: {what}; "
            f"not in {REGISTRY} either"]  # fmt: skip


def _check_previous(
    root: Path, registry: dict[str, Any], stale_files: set[str], load: Any
) -> list[str]:
    """Errors of ``previous_default``: records of a decision taken with an earlier default
    (a selection round, a baseline the protocol named), which stay as they were made. Each
    must carry the weights of the bundled model it names (the earlier default, still bundled
    under that name); it is then not stale and leaves ``stale_files``."""
    from nucseg.provenance import file_sha256

    errors = []
    for file, entry in sorted(registry.get("previous_default", {}).items()):
        weights = root / BUNDLED.parent / entry["model"] / "model.safetensors"
        if not weights.is_file():
            errors.append(f"{REGISTRY}: {file}: no bundled model {entry['model']!r}")
            continue
        sha = file_sha256(weights)
        hashes = [h for where, h in weights_hashes(load(Path(file)))
                  if "models/default" in where]  # fmt: skip
        if file not in stale_files:
            errors.append(f"{REGISTRY}: previous_default lists {file}, made with today's default "
                          "(or no default): remove it")  # fmt: skip
        elif any(h != sha for h in hashes):
            errors.append(f"{REGISTRY}: {file}: made with other weights than {entry['model']}'s")
        else:
            stale_files.discard(file)
    return errors


def _check_stale(
    root: Path, registry: dict[str, Any], stale_files: set[str], load: Any
) -> tuple[list[str], list[str]]:
    """Errors and warnings of ``known_stale`` against the files stale by their weights."""
    known = registry.get("known_stale", {})
    errors = [f"{f}: made with other weights than the bundled model's (regenerate it)"
              for f in sorted(stale_files - set(known))]  # fmt: skip
    warnings = []
    for file, entry in sorted(known.items()):
        since = entry.get("since")
        made = (root / file).is_file() and (provenance_of(load(Path(file))) or {}).get("commit")
        if since is not None and not _descends(root, since, since):
            errors.append(f"{REGISTRY}: {file}: since {since} is not a commit of this repository")
        elif since is None and file not in stale_files:
            errors.append(f"{REGISTRY}: known_stale lists {file}, which is not stale: remove it")
        elif since is not None and made and _descends(root, since, made):
            errors.append(f"{REGISTRY}: {file} was regenerated at or after {since}: remove it "
                          "from known_stale")  # fmt: skip
        else:
            warnings.append(f"{file}: stale: {entry['reason']}")
    return errors, warnings


def _descends(root: Path, ancestor: str, commit: str) -> bool:
    """Whether ``commit`` is ``ancestor`` or comes after it in this repository's history (False
    without git or the commits; ``root`` may be a copy of the docs, so git runs in :data:`ROOT`)."""
    import subprocess

    try:
        done = subprocess.run(["git", "merge-base", "--is-ancestor", ancestor, commit], cwd=ROOT,
                              capture_output=True)  # fmt: skip
    except OSError:
        return False
    return done.returncode == 0


def _registered(
    registry: dict[str, Any], doc: Path, figure: str, text: str, used: set[int]
) -> dict[str, Any] | None:
    flat = " ".join(text.split())
    for i, entry in enumerate(registry.get("derived", []) + registry.get("not_results", [])):
        context = " ".join(entry["context"].split())
        if (
            entry["doc"] == str(doc)
            and entry["figure"] == figure
            and context in flat
            and figure in context
        ):
            used.add(i)
            return entry
    return None


def main() -> int:
    sys.path.insert(0, str(ROOT / "src"))
    errors, warnings = check()
    for line in warnings:
        print(f"warning: {line}")
    for line in errors:
        print(f"error: {line}")
    print(f"{len(errors)} errors, {len(warnings)} warnings")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
