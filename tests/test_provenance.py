"""Provenance: the files that differ from the commit, model hashes, and reproduce's code check."""

from __future__ import annotations

import json
import subprocess

import pytest

from nucseg import provenance


def _git(folder, *args):
    subprocess.run(["git", *args], cwd=folder, check=True, capture_output=True)


def test_code_state_lists_modified_and_untracked_files(tmp_path, monkeypatch):
    _git(tmp_path, "init", "-q")
    (tmp_path / "code.py").write_text("a = 1\n")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "r.json").write_text("{}\n")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "x")
    monkeypatch.setattr(provenance, "_SOURCE", tmp_path)
    clean = provenance.code_state()
    assert len(clean["commit"]) == 40
    assert (clean["modified"], clean["untracked"], clean["dirty"]) == ([], [], False)
    (tmp_path / "results" / "r.json").write_text('{"aji": 1}\n')
    assert provenance.code_state()["dirty"] is False  # a result being rewritten: not code
    (tmp_path / "new.py").write_text("b = 2\n")
    (tmp_path / "code.py").write_text("a = 2\n")
    state = provenance.code_state()
    assert state["modified"] == ["code.py", "results/r.json"]
    assert state["untracked"] == ["new.py"] and state["dirty"] is True


def test_model_hashes_and_manifest(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    (tmp_path / "thresholds.json").write_text("{}")
    record = provenance.provenance(["nucseg", "evaluate"], models=[tmp_path])
    weights = provenance.file_sha256(tmp_path / "model.safetensors")
    hashes = record["models"][f"sha256:{weights}"]  # outside the repository: named by its hash
    assert set(hashes) == {"model.safetensors", "thresholds.json"}
    assert hashes["model.safetensors"] == weights
    assert record["command"] == "nucseg evaluate"
    provenance.write_manifest(tmp_path)
    assert provenance.check_manifest(tmp_path) == []
    (tmp_path / "thresholds.json").write_text('{"changed": 1}')
    (tmp_path / "normaliser.json").write_text("{}")
    problems = provenance.check_manifest(tmp_path)
    assert any("thresholds.json: SHA-256" in p for p in problems)
    assert any("normaliser.json: not in" in p for p in problems)


def test_reproduce_refuses_scores_of_another_commit(tmp_path):
    from nucseg.reproduce import ReproduceConfig, Reproduction

    run = Reproduction(ReproduceConfig(), tmp_path)
    run.check_code()  # no scores yet
    (tmp_path / "scores").mkdir()
    other = {"provenance": {"commit": "0" * 40}}
    (tmp_path / "scores" / "fiji_tnbc.json").write_text(json.dumps(other))
    if run.origin["commit"] is None:
        pytest.skip("not a git checkout: no commit to compare")
    with pytest.raises(ValueError, match="commit 0000000000 .*--allow-code-change"):
        run.check_code()
    Reproduction(ReproduceConfig(), tmp_path, allow_code_change=True).check_code()


def test_no_machine_path_is_recorded(tmp_path, monkeypatch):
    """Folders in the package, the repository or $NUCSEG_DATA are named relative to them; a
    model elsewhere by its weights' hash; absolute paths in the command likewise."""
    package = provenance._SOURCE
    bundled = package / "data" / "models" / "default"
    assert provenance.portable_path(bundled) == "nucseg/data/models/default"
    assert provenance.portable_path(package) == "nucseg"
    if provenance._REPOSITORY is not None:
        script = provenance._REPOSITORY / "benchmarks" / "bench_slide.py"
        assert provenance.portable_path(script) == "benchmarks/bench_slide.py"
    monkeypatch.setenv("NUCSEG_DATA", str(tmp_path / "data"))
    image = tmp_path / "data" / "monuseg" / "a.tif"
    assert provenance.portable_path(image) == "$NUCSEG_DATA/monuseg/a.tif"
    assert provenance.portable_path("runs/x") == "runs/x"  # relative: kept
    command = provenance.portable_command(
        ["/opt/venv/bin/nucseg", "evaluate", str(image), "--model", str(bundled)]
    )
    assert (
        command == "nucseg evaluate $NUCSEG_DATA/monuseg/a.tif --model nucseg/data/models/default"
    )
    with pytest.raises(FileNotFoundError, match="no model weights"):
        provenance.model_key(tmp_path)
    (tmp_path / "model.pt").write_bytes(b"w")
    assert (
        provenance.model_key(tmp_path) == f"sha256:{provenance.file_sha256(tmp_path / 'model.pt')}"
    )
    if bundled.is_dir():
        record = provenance.provenance(["python", "x.py"], models=[bundled, tmp_path])
        text = json.dumps({k: v for k, v in record.items() if k != "date"})
        assert str(tmp_path) not in text and str(package) not in text
        assert "nucseg/data/models/default" in record["models"]
