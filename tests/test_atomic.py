"""Tests of nucseg.atomic: groups of files, stale temporaries, clean errors."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from nucseg import atomic


def _dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_group_appears_whole_or_not_at_all(tmp_path):
    paths = {"a": tmp_path / "x_a.txt", "b": tmp_path / "x_b.txt"}
    with atomic.atomic_group(paths) as tmps:
        assert {p.name for p in tmps.values()} == {"x_a.txt", "x_b.txt"}  # final names kept
        for key, tmp in tmps.items():
            tmp.write_text(key)
        assert not any(p.exists() for p in paths.values())
    assert [p.read_text() for p in paths.values()] == ["a", "b"]
    with pytest.raises(RuntimeError), atomic.atomic_group(paths, overwrite=True) as tmps:
        tmps["a"].write_text("new")
        raise RuntimeError
    assert [p.read_text() for p in paths.values()] == ["a", "b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x_a.txt", "x_b.txt"]


def test_group_refuses_existing_files_and_folders_before_writing(tmp_path):
    (tmp_path / "x_b.txt").mkdir()
    paths = {"a": tmp_path / "x_a.txt", "b": tmp_path / "x_b.txt"}
    with pytest.raises(IsADirectoryError, match="x_b.txt is a folder"):
        with atomic.atomic_group(paths, overwrite=True):
            pytest.fail("the block must not run")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x_b.txt"]


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    dead, alive = _dead_pid(), os.getppid()
    stale = tmp_path / f".a_labels.tif.nucseg-tmp-{dead}-0badcafe.tif"
    stale_dir = tmp_path / f".nucseg-tmp-{dead}-12345678"
    live = tmp_path / f".b.csv.nucseg-tmp-{alive}-abcdef01.csv"
    other = tmp_path / f".c.tmp{dead}.csv"  # not this tool's naming: left alone
    stale.write_text("x")
    stale_dir.mkdir()
    (stale_dir / "a_overlay.png").write_text("x")
    live.write_text("x")
    other.write_text("x")
    removed = atomic.clean_stale_temporaries(tmp_path)
    assert sorted(removed) == sorted([stale, stale_dir])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name])


def test_atomic_write_failing_cleanup_does_not_hide_the_error(tmp_path, monkeypatch):
    def refuse(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(atomic, "_fsync", lambda path: None)
    monkeypatch.setattr(atomic.Path, "unlink", lambda self, missing_ok=False: refuse(self))
    with pytest.raises(ValueError, match="the real error"):
        with atomic.atomic_write(tmp_path / "f.txt"):
            raise ValueError("the real error")


def test_writable_folder_names_the_file_in_the_way(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        atomic.check_writable_folder(tmp_path / "file" / "sub")
    assert atomic.check_writable_folder(tmp_path / "new" / "sub").is_dir()
    assert not [p for p in (tmp_path / "new" / "sub").iterdir()]


def test_read_json_names_the_file(tmp_path):
    bad = tmp_path / "thresholds.json"
    bad.write_bytes(b"\x80\x04\x95 not json")
    with pytest.raises(ValueError, match="thresholds.json: not a valid JSON"):
        atomic.read_json(bad)
