"""Files that appear complete or not at all: atomic writes, groups of files, stale temporaries.

Every file nucseg writes goes through :func:`atomic_write` (re-exported as
:func:`nucseg.io.atomic_write`): it is written under a temporary name in the same folder, flushed
to disk (``fsync`` of the file, then of the folder after the rename) and renamed onto its final
name. Temporaries are named ``.<name>.nucseg-tmp-<pid>-<random><suffix>`` (and the staging folders
of :func:`atomic_group` ``.nucseg-tmp-<pid>-<random>``), so :func:`clean_stale_temporaries` can
recognise those left by a process that was killed (``kill -9``) and remove them once that process
is gone.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PathLike = str | os.PathLike

#: Marks this tool's temporaries: ``.<name>.nucseg-tmp-<pid>-<hex>...`` or ``.nucseg-tmp-...``.
TMP_MARK = "nucseg-tmp"
_TMP_PATTERN = re.compile(rf"^\.(?:.*\.)?{TMP_MARK}-(?P<pid>\d+)-[0-9a-f]+")
_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def temporary_name(path: PathLike) -> Path:
    """A fresh temporary path beside ``path``, keeping its suffix (writers pick formats by it)."""
    path = Path(path)
    token = f"{TMP_MARK}-{os.getpid()}-{secrets.token_hex(4)}"
    return path.with_name(f".{path.name}.{token}{path.suffix}")


def check_writable_folder(folder: PathLike, *, what: str = "output folder") -> Path:
    """Create ``folder`` if needed and prove a file can be written there; return it.

    Raises
    ------
    NotADirectoryError
        If ``folder`` or one of its parents is a file (the message names it).
    PermissionError, OSError
        If the folder cannot be created or written (read-only file system, permissions).
    """
    folder = Path(folder)
    for parent in (folder, *folder.parents):
        if parent.exists() and not parent.is_dir():
            raise NotADirectoryError(
                errno.ENOTDIR, f"{what} {folder}: {parent} is a file, not a folder", str(folder)
            )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = temporary_name(folder / "write-test")
        probe.touch(exist_ok=False)
        probe.unlink()
    except OSError as err:
        reason = err.strerror or str(err)
        raise type(err)(
            err.errno, f"cannot write to {what} {folder}: {reason}", str(folder)
        ) from None
    return folder


def _check_target(path: Path, *, overwrite: bool) -> None:
    if path.is_dir():
        raise IsADirectoryError(
            errno.EISDIR, f"{path} is a folder; choose another output name", str(path)
        )
    if not overwrite and path.exists():
        raise FileExistsError(f"{path} exists; pass --overwrite (overwrite=True) to replace it")
    if not path.parent.is_dir():
        if path.parent.exists():
            raise NotADirectoryError(
                errno.ENOTDIR, f"{path}: {path.parent} is a file, not a folder", str(path)
            )
        raise FileNotFoundError(f"{path}: folder {path.parent} does not exist")


def _fsync(path: Path) -> None:
    """Flush ``path`` (a file or a folder) to disk; folders that refuse it are skipped."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() and hasattr(os, "O_DIRECTORY") else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):  # some file systems do not sync folders
            os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    """Remove a temporary file or folder; never raise (a cleanup must not hide the real error)."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    except OSError as err:
        log.warning("could not remove the temporary %s: %s", path, err)


@contextlib.contextmanager
def atomic_write(path: PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` when the block succeeds.

    The temporary (see :func:`temporary_name`) lies in the same folder, so the final
    :func:`os.replace` is atomic; the file is fsynced before and the folder after the rename. If
    the block raises (or is interrupted), the temporary is removed and ``path`` is left as it was.

    Parameters
    ----------
    path : path-like
        Final file.
    overwrite : bool, optional
        Replace ``path`` if it exists instead of refusing.

    Yields
    ------
    pathlib.Path
        Where the block must write.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.
    IsADirectoryError
        If ``path`` is a folder.
    FileNotFoundError, NotADirectoryError
        If the folder of ``path`` does not exist or is a file.
    """
    path = Path(path)
    _check_target(path, overwrite=overwrite)
    tmp = temporary_name(path)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except OSError as err:
        _remove(tmp)
        raise write_error(err, path) from err
    except BaseException:
        _remove(tmp)
        raise
    _fsync(path.parent)


#: Causes of a failed write, by errno, in the words a user acts on.
_WRITE_CAUSES = {
    errno.ENOSPC: "no space left on the device (disk full)",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large (a file size limit such as `ulimit -f`, or the file system's)",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EIO: "input/output error (a failing disk or a lost network mount?)",
}


def write_error(err: OSError, path: PathLike) -> OSError:
    """``err`` as an error naming the file being written and the cause, if it is one of a write
    (disk full, file too large, read-only, permission, I/O, a short write); else ``err`` itself.

    The returned error has ``err``'s type and errno, so ``except OSError`` still catches it; its
    text is one line: ``cannot write PATH: CAUSE``.
    """
    cause = _WRITE_CAUSES.get(err.errno)
    if cause is None and err.errno is None and "requested and" in str(err):
        # numpy's short write ("N requested and M written"): the disk or a size limit is full
        cause = f"only part of the data was written ({err}): disk full or a file size limit?"
    if cause is None:
        return err
    text = f"cannot write {path}: {cause}"
    try:
        return type(err)(err.errno, text) if err.errno is not None else type(err)(text)
    except TypeError:  # an OSError subclass with another signature
        return OSError(err.errno, text)


@contextlib.contextmanager
def atomic_group(paths: Mapping[str, PathLike], *, overwrite: bool = False) -> Iterator[dict]:
    """Write several files that must appear together: all of them, or none.

    Yields ``key -> temporary path`` in a staging folder ``.nucseg-tmp-<pid>-<hex>`` beside the
    first file; each temporary has its final file's name (a writer that records its file name,
    like :func:`nucseg.io.export_geojson`, records the right one). When the block succeeds the
    files are renamed onto their final names with SIGINT and SIGTERM held back, so a signal never
    leaves a partial set; if the block fails the staging folder is removed.

    Raises
    ------
    FileExistsError, IsADirectoryError, NotADirectoryError, FileNotFoundError
        As :func:`atomic_write`, for any of the files, before anything is written.
    """
    finals = {key: Path(p) for key, p in paths.items()}
    for final in finals.values():
        _check_target(final, overwrite=overwrite)
    folder = next(iter(finals.values())).parent
    staging = folder / f".{TMP_MARK}-{os.getpid()}-{secrets.token_hex(4)}"
    staging.mkdir()
    try:
        tmps = {key: staging / final.name for key, final in finals.items()}
        yield tmps
        for tmp in tmps.values():
            _fsync(tmp)
        with _signals_held():
            for key, final in finals.items():
                os.replace(tmps[key], final)
        _fsync(folder)
    except OSError as err:  # a writer's own error names no file: the folder is named
        raise write_error(err, f"in {folder}") from err
    finally:
        _remove(staging)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back for the duration of the block, then act on them.

    In the main thread the handlers are swapped for one that only records the signal, and the
    original handler is called after the block: the kernel still delivers the signal (to the
    main thread: nucseg's workers block it, see :func:`worker_thread_signals`), so it is never
    lost or late. Elsewhere (where Python cannot change handlers) the signals are blocked in
    that thread.
    """
    previous = {sig: signal.getsignal(sig) for sig in _SIGNALS}
    if threading.current_thread() is not threading.main_thread() or None in previous.values():
        blocked = _block_signals()
        try:
            yield
        finally:
            _unblock_signals(blocked)
        return
    caught: list[int] = []
    for sig in _SIGNALS:
        signal.signal(sig, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig in caught:
            handler = previous[sig]
            if callable(handler):
                handler(sig, None)
            elif handler != signal.SIG_IGN:  # the default action: end the process
                signal.raise_signal(sig)


def worker_thread_signals() -> None:
    """Block SIGINT and SIGTERM in the calling thread: the initializer of nucseg's worker threads.

    Python runs signal handlers in the main thread only; a signal the kernel hands to a worker
    thread can reach the handler late or, at the end of a run, not at all. Blocked in every
    worker (and in the OpenMP threads a worker starts, which inherit its mask), Ctrl-C and
    SIGTERM always go to the main thread.
    """
    _block_signals()


def _block_signals() -> set | None:
    if not hasattr(signal, "pthread_sigmask"):
        return None
    return signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)


def _unblock_signals(previous: set | None) -> None:
    if previous is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


#: The lock file of an output folder (:func:`folder_lock`).
LOCK_NAME = ".nucseg-lock"


@contextlib.contextmanager
def folder_lock(folder: PathLike) -> Iterator[Path]:
    """Hold ``folder`` (created if needed) for this process while the block runs.

    The lock is the file ``folder/.nucseg-lock``, holding the process id, host name and start
    time as JSON; it is created complete and atomically (written under a temporary name and
    hard-linked into place, which fails if another process holds the lock) and removed when the
    block ends, also on an exception or Ctrl-C. A lock left by a process of this host that no
    longer runs (``kill -9``, a crash) is taken over with a warning; a live process's lock, or
    one of another host, is refused.

    Raises
    ------
    FileExistsError
        If another live process holds the folder; the message names it and the lock file.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_NAME
    me = {"pid": os.getpid(), "host": socket.gethostname(),
          "started": time.strftime("%Y-%m-%d %H:%M:%S")}  # fmt: skip
    tmp = temporary_name(lock)
    tmp.write_text(json.dumps(me) + "\n")
    try:
        _link_lock(tmp, lock, folder)
    finally:
        _remove(tmp)
    try:
        yield lock
    finally:
        if _read_lock(lock) == me:
            with contextlib.suppress(OSError):
                lock.unlink()


def _link_lock(tmp: Path, lock: Path, folder: Path) -> None:
    for _ in range(3):
        try:
            _place(tmp, lock)
            return
        except FileExistsError:
            holder = _read_lock(lock)
        if holder is None:  # removed meanwhile by its process: try again
            continue
        pid, host = holder.get("pid"), holder.get("host")
        if host == socket.gethostname() and isinstance(pid, int) and not _pid_alive(pid):
            log.warning(
                "%s: taking over the lock of process %d (started %s), which no longer runs",
                folder, pid, holder.get("started", "?"),
            )  # fmt: skip
            if _read_lock(lock) == holder:
                with contextlib.suppress(FileNotFoundError):
                    lock.unlink()
            continue
        raise FileExistsError(
            f"{folder} is being written by another nucseg run (process {pid} on {host}, "
            f"started {holder.get('started', '?')}); wait for it to end, or remove {lock} if "
            "that process is gone"
        )
    raise FileExistsError(f"{folder}: could not take the lock {lock}; try again")


def _place(tmp: Path, lock: Path) -> None:
    """Put ``tmp``'s content at ``lock`` unless ``lock`` exists (``FileExistsError``): a hard
    link, or where the file system has none (FAT, some network mounts) an exclusive create."""
    try:
        os.link(tmp, lock)
    except FileExistsError:
        raise
    except OSError:
        fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "w") as fh:
            fh.write(tmp.read_text())


def _read_lock(lock: Path) -> dict | None:
    try:
        holder = json.loads(lock.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"pid": None, "host": "?", "started": "? (unreadable lock file)"}
    return holder if isinstance(holder, dict) else {"pid": None, "host": "?"}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def clean_stale_temporaries(folder: PathLike) -> list[Path]:
    """Remove this tool's temporaries in ``folder`` whose process no longer runs.

    Only names made by :func:`temporary_name` and :func:`atomic_group` are considered, and only
    those of a process id that is not running; another nucseg process's live temporaries stay.

    Returns
    -------
    list of Path
        What was removed.
    """
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        match = _TMP_PATTERN.match(entry.name)
        if match is None or int(match["pid"]) == os.getpid() or _pid_alive(int(match["pid"])):
            continue
        _remove(entry)
        log.info("removed the stale temporary %s", entry)
        removed.append(entry)
    return removed


def read_json(path: PathLike, *, what: str = "file") -> Any:
    """Read a JSON file; errors name the file (and never run code: JSON holds data only).

    Raises
    ------
    FileNotFoundError
        If ``path`` is not a file.
    ValueError
        If it is not valid UTF-8 JSON.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such {what}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a valid JSON {what} ({err})") from None


def write_json(
    path: PathLike, obj: Any, *, overwrite: bool = False, indent: int | None = 1, **dumps: Any
) -> Path:
    """Write ``obj`` as JSON through :func:`atomic_write` (``dumps``: more ``json.dumps``
    options, e.g. ``default=float``); returns the path."""
    text = json.dumps(obj, indent=indent, **dumps) + "\n"
    with atomic_write(path, overwrite=overwrite) as tmp:
        tmp.write_text(text)
    return Path(path)
