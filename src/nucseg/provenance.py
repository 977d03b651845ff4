"""What produced a result: the command, the code (commit, modified and untracked files), the
machine and the SHA-256 of every model file. Every result JSON (``nucseg evaluate``,
``nucseg reproduce``, the benchmark scripts) records :func:`provenance`. No path of the machine
that ran it is recorded: files are named relative to the package, the repository or
``$NUCSEG_DATA`` (:func:`portable_path`), and a model folder elsewhere by its weights' SHA-256
(:func:`model_key`).

A model folder's own manifest, ``SHA256SUMS`` (the format of ``sha256sum``, so
``sha256sum -c SHA256SUMS`` checks it in the folder), is written by :func:`write_manifest` and
checked by :func:`check_manifest`.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import platform
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from nucseg import __version__

#: Files of a model folder that define its predictions (weights, post-processing, stain
#: normaliser, training config, averaging record), hashed into results and the manifest.
MODEL_FILES = (
    "model.safetensors",
    "model.pt",
    "thresholds.json",
    "normaliser.json",
    "config.json",
    "soup.json",
    "int8/model.xml",  # the int8 network (nucseg.backends.int8)
    "int8/model.bin",
    "int8/int8.json",
)
MANIFEST = "SHA256SUMS"
_SOURCE = Path(__file__).resolve().parent
#: The repository holding the package (a source checkout), or None (an installed package).
_REPOSITORY = _SOURCE.parents[1] if (_SOURCE.parents[1] / "pyproject.toml").is_file() else None


def file_sha256(path: str | os.PathLike, *, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def model_sha256(folder: str | os.PathLike) -> dict[str, str]:
    """``file name -> SHA-256`` of the :data:`MODEL_FILES` present in a model folder."""
    folder = Path(folder)
    return {name: file_sha256(folder / name) for name in MODEL_FILES if (folder / name).is_file()}


def portable_path(path: str | os.PathLike) -> str:
    """A name of ``path`` that holds on any machine: ``nucseg/...`` inside the package (the
    bundled models), relative inside the repository (``runs/base32``), ``$NUCSEG_DATA/...``
    inside the datasets' folder; any other path as given.

    Examples
    --------
    >>> portable_path(_SOURCE / "data" / "models" / "default")
    'nucseg/data/models/default'
    """
    path = Path(path)
    if not path.is_absolute():
        return str(path)
    resolved = path.resolve()
    data = os.environ.get("NUCSEG_DATA")
    roots = [(_SOURCE, "nucseg"), (_REPOSITORY, None), (Path(data).resolve() if data else None,
                                                        "$NUCSEG_DATA")]  # fmt: skip
    for root, prefix in roots:
        if root is not None and resolved.is_relative_to(root):
            relative = resolved.relative_to(root).as_posix()
            if prefix is None:
                return relative
            return prefix if relative == "." else f"{prefix}/{relative}"
    return str(path)


def model_key(folder: str | os.PathLike) -> str:
    """How a result names a model folder: :func:`portable_path` inside the package, the
    repository or ``$NUCSEG_DATA``; elsewhere ``sha256:<weights' SHA-256>`` (no machine path)."""
    name = portable_path(folder)
    if not Path(name).is_absolute():
        return name
    hashes = model_sha256(folder)
    weights = hashes.get("model.safetensors") or hashes.get("model.pt")
    if weights is None:
        raise FileNotFoundError(f"{folder} holds no model weights: not a model folder")
    return f"sha256:{weights}"


def portable_command(argv: Sequence[str]) -> str:
    """The command as one string, its absolute paths made :func:`portable_path`."""
    words = [portable_path(w) if w.startswith(os.sep) else w for w in argv]
    if words and Path(words[0]).name == "nucseg":
        words[0] = "nucseg"
    return " ".join(words)


def write_manifest(folder: str | os.PathLike) -> Path:
    """Write ``folder/SHA256SUMS``: one ``<sha256>  <name>`` line per model file (sha256sum's
    format); run it again whenever the model is re-bundled."""
    from nucseg.atomic import atomic_write

    folder = Path(folder)
    hashes = model_sha256(folder)
    if "model.safetensors" not in hashes and "model.pt" not in hashes:
        raise FileNotFoundError(f"{folder} holds no model weights: not a model folder")
    path = folder / MANIFEST
    with atomic_write(path, overwrite=True) as tmp:
        tmp.write_text("".join(f"{digest}  {name}\n" for name, digest in hashes.items()))
    return path


def read_manifest(folder: str | os.PathLike) -> dict[str, str]:
    """``file name -> SHA-256`` recorded in ``folder/SHA256SUMS``."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no manifest (write it with nucseg.provenance)")
    out = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64:
            raise ValueError(f"{path}:{number}: expected '<sha256>  <file name>', got {line!r}")
        out[name] = digest
    return out


def check_manifest(folder: str | os.PathLike) -> list[str]:
    """Problems of a model folder against its manifest (empty when every hash matches)."""
    recorded, actual = read_manifest(folder), model_sha256(folder)
    problems = [f"{n}: not in {MANIFEST}" for n in actual if n not in recorded]
    problems += [f"{n}: listed but missing" for n in recorded if n not in actual]
    problems += [
        f"{n}: SHA-256 {actual[n]} but {MANIFEST} says {recorded[n]}"
        for n in recorded
        if n in actual and actual[n] != recorded[n]
    ]
    return problems


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], capture_output=True, text=True, check=True, cwd=_SOURCE
    ).stdout


def code_state() -> dict[str, Any]:
    """The commit checked out and the files that differ from it (``git status --porcelain``).

    ``modified`` lists the tracked files changed, staged or not; ``untracked`` the files git
    does not know (ignored ones excluded); ``dirty`` says whether any of them lies outside
    ``results/`` (a result file being rewritten does not make the code dirty). Outside a git
    checkout (an installed package) every value is None.
    """
    try:
        commit = _git("rev-parse", "HEAD").strip()
        status = _git("status", "--porcelain", "--untracked-files=all")
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "modified": None, "untracked": None, "dirty": None}
    modified, untracked = [], []
    for line in status.splitlines():
        code, name = line[:2], line[3:]
        name = name.split(" -> ")[-1].strip('"')
        (untracked if code == "??" else modified).append(name)
    code = [name for name in modified + untracked if not name.startswith("results/")]
    return {"commit": commit, "modified": modified, "untracked": untracked, "dirty": bool(code)}


def provenance(
    argv: Sequence[str] | None = None, *, models: Iterable[str | os.PathLike] = ()
) -> dict[str, Any]:
    """Describe how a result was produced.

    Parameters
    ----------
    argv : sequence of str, optional
        The command (default ``sys.argv``).
    models : iterable of path-like, optional
        Model folders whose files' SHA-256 are recorded (``models``: :func:`model_key` of the
        folder -> file name -> hash).

    Returns
    -------
    dict
        ``command``, ``commit``, ``modified``, ``untracked``, ``dirty`` (see :func:`code_state`),
        ``models``, ``nucseg``, ``python``, ``machine``, ``cpus``, ``date``.
    """
    argv = list(sys.argv if argv is None else argv)
    return {
        "command": portable_command(argv),
        **code_state(),
        "models": {model_key(folder): model_sha256(folder) for folder in models},
        "nucseg": __version__,
        "python": platform.python_version(),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpus": os.cpu_count(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m nucseg.provenance FOLDER...``: write (or with ``--check`` check) manifests."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m nucseg.provenance", description=main.__doc__)
    parser.add_argument("folders", nargs="+", type=Path, metavar="MODEL_FOLDER")
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    bad = 0
    for folder in args.folders:
        if args.check:
            problems = check_manifest(folder)
            bad += len(problems)
            print(f"{folder}: " + ("; ".join(problems) if problems else "ok"))
        else:
            print(write_manifest(folder))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
