"""The figures of README.md and docs/*.md: each matches the results file it names, every quoted
file is clean and of the current weights, and ``benchmarks/regenerate.py`` writes every one."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    path = ROOT / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_benchmarks_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[f"_benchmarks_{name}"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


figures = _load("figures")
regenerate = _load("regenerate")


@pytest.fixture
def copy(tmp_path):
    """A copy of the README and docs beside the real results and package (linked), to edit."""
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    (tmp_path / "results").symlink_to(ROOT / "results")
    (tmp_path / "src").symlink_to(ROOT / "src")
    return tmp_path


def test_every_quoted_figure_matches_its_results_file():
    errors, _ = figures.check(ROOT)
    assert errors == []


@pytest.mark.parametrize(
    ("doc", "old", "new"),
    [
        ("README.md", "AJI 0.6090 / mAP 0.3569", "AJI 0.6590 / mAP 0.3569"),  # a headline figure
        ("README.md", "1.15 and 1.34 times faster", "1.15 and 1.44 times faster"),  # a speed
        ("docs/slides.md", "for 0.0014 of validation AJI (", "for 0.0016 of validation AJI ("),
    ],
)
def test_editing_a_quoted_number_fails_the_check(copy, doc, old, new):
    text = (copy / doc).read_text()
    assert old in text
    (copy / doc).write_text(text.replace(old, new, 1))
    errors, _ = figures.check(copy)
    figure = next(w for w in new.split() if w not in old.split())
    assert errors and f": {figure} " in errors[0], errors


def test_a_number_matching_only_another_file_of_the_paragraph_fails(copy):
    # stain.md's paragraph names the test-set files in one sentence and speed.json in the next;
    # 0.61 is the breast AJI (0.6090) rounded, so it matches a file of the paragraph, not its own
    breast = json.loads((ROOT / "results/unet/default_monuseg-breast.json").read_text())
    speed = json.loads((ROOT / "results/unet/speed.json").read_text())
    assert any(figures.matches("0.61", v) for v in figures.numbers_of(breast))
    assert not any(figures.matches("0.61", v) for v in figures.numbers_of(speed))
    doc = copy / "docs" / "stain.md"
    old = "against 0.56 s for the previous"
    assert old in doc.read_text()
    doc.write_text(doc.read_text().replace(old, "against 0.61 s for the previous", 1))
    errors, _ = figures.check(copy)
    assert len(errors) == 1 and "docs/stain.md:" in errors[0], errors
    assert (
        ": 0.61 matches no value of its nearest results file: results/unet/speed.json"
        in (errors[0])
    )


TYPES, CONSEP = (
    "../results/types/ms-types.json",
    "../results/generalisation/default_consep-test.json",
)


@pytest.mark.parametrize(
    ("text", "wrong"),
    [
        (f"A 0.5119 ([a]({TYPES})). B 0.4406 ([b]({CONSEP})).", []),
        (f"A 0.4406 ([a]({TYPES})). B 0.5119 ([b]({CONSEP})).", ["0.4406", "0.5119"]),
        (f"A ([a]({TYPES})), B ([b]({CONSEP})). B reached 0.4406. A 0.5119.", ["0.5119"]),
        (f"A reached 0.5119. B 0.4406 ([b]({CONSEP})), A ([a]({TYPES})).", ["0.5119"]),
        (f"Scores 0.5119 and 0.4406 ([a]({TYPES}), [b]({CONSEP})).", []),  # one sentence
        (f"| a | 0.5119 | [a]({TYPES}) |\n| b | 0.4406 | [b]({CONSEP}) |", []),
        (f"| a | 0.4406 | [a]({TYPES}) |\n| b | 0.5119 | [b]({CONSEP}) |", ["0.4406", "0.5119"]),
        (f"| a | [a]({TYPES}) |\n| b | 0.5119 |\n| c | [b]({CONSEP}) | 0.4406 |", []),
        (f"A 0.512, 0.51 and 0.5 ([a]({TYPES})); not 0.5120 or 0.5118.", ["0.5120", "0.5118"]),
    ],
)
def test_a_number_matches_the_file_linked_nearest_to_it(copy, text, wrong):
    for figure in ("0.4406", "0.5120", "0.5118"):  # the cases need values of one file only
        assert not any(figures.matches(figure, v) for v in figures.numbers_of(
            json.loads((copy / "docs" / TYPES).read_text())))  # fmt: skip
    assert not any(figures.matches("0.5119", v) for v in figures.numbers_of(
        json.loads((copy / "docs" / CONSEP).read_text())))  # fmt: skip
    (copy / "docs" / "extra.md").write_text(text + "\n")
    errors, _ = figures.check(copy)
    found = [e.split(": ")[1].split()[0] for e in errors]
    assert sorted(found) == sorted(wrong) and all("docs/extra.md:" in e for e in errors), errors


def test_a_figure_without_a_source_fails_and_a_registered_one_must_be_quoted(copy):
    doc = copy / "docs" / "slides.md"
    link = "[bench](../results/slide/bench_engine.json)"
    doc.write_text(doc.read_text() + f"\nIt took 0.1234 s ({link}).\n")
    errors, _ = figures.check(copy)
    assert any("docs/slides.md" in e and "0.1234 matches no value" in e for e in errors), errors
    doc.write_text(doc.read_text().replace("optical density above 0.15", "optical density"))
    errors, _ = figures.check(copy)
    assert any("0.15" in e and "no longer quoted" in e for e in errors), errors


def _result(folder: Path, name: str, **provenance) -> str:
    record = {"aji": 0.4321, "provenance": {"command": "x", "commit": "a" * 40, "modified": [],
                                            "untracked": [], **provenance}}  # fmt: skip
    (folder / name).write_text(json.dumps(record))
    return name


def test_unclean_and_stale_results_fail(copy):
    results = copy / "results"
    results.unlink()
    shutil.copytree(ROOT / "results", results, symlinks=True)
    from nucseg.provenance import file_sha256

    sha = file_sha256(copy / figures.BUNDLED / "model.safetensors")
    cases = {
        _result(results, "dirty.json", modified=["src/nucseg/infer.py"]): "modified tree",
        _result(results, "nocommit.json", commit=None): "no commit",
        _result(results, "nohash.json", models={"runs/x": {}}): "weights' SHA-256",
        _result(
            results,
            "stale.json",
            models={"nucseg/data/models/default": {"model.safetensors": "0" * 64}},
        ): "other weights",  # fmt: skip
        _result(
            results, "ok.json", models={"nucseg/data/models/default": {"model.safetensors": sha}}
        ): None,  # fmt: skip
    }
    doc = copy / "docs" / "extra.md"
    for name, problem in cases.items():
        doc.write_text(f"AJI 0.4321 ([x](../results/{name})).\n")
        errors, _ = figures.check(copy)
        if problem is None:
            assert errors == [], errors
        else:
            assert len(errors) == 1 and name in errors[0] and problem in errors[0], errors
    doc.write_text("AJI 0.4321 ([x](../results/archive/README.md), [y](../results/ok.json)).\n")
    assert figures.check(copy)[0] == []
    doc.write_text("Archived: [x](../results/archive/unet/soup/soup_tnbc.json).\n")
    assert figures.check(copy)[0] == []  # no number there: a link to the archive is allowed
    doc.write_text("AJI 0.6309 ([x](../results/archive/unet/soup/soup_tnbc.json)).\n")
    errors, _ = figures.check(copy)  # the archive is never a source
    assert len(errors) == 1 and "0.6309 matches no value" in errors[0], errors


def test_a_stale_entry_must_go_once_its_file_is_regenerated(copy):
    registry = json.loads((copy / figures.REGISTRY).read_text())
    tiles = "results/slide/tiles.json"
    made_at = figures.provenance_of(json.loads((ROOT / tiles).read_text()))["commit"]
    for since, problem in [(made_at, "regenerated at or after"), ("0" * 40, "is not a commit")]:
        registry["known_stale"][tiles] = {"reason": "test", "since": since}
        (copy / figures.REGISTRY).write_text(json.dumps(registry))
        errors, _ = figures.check(copy)
        assert len(errors) == 1 and tiles in errors[0] and problem in errors[0], errors


def test_a_baselines_model_from_another_checkout_is_not_stale(tmp_path):
    prov = {"commit": "a" * 40, "command": "x", "modified": []}
    mine = {"nucseg/data/models/default": {"model.safetensors": "1" * 64}}
    base = {"/tmp/nucseg-base/src/nucseg/data/models/default": {"model.safetensors": "2" * 64}}
    data = {"provenance": {**prov, "models": mine},
            "chunk_profile": {"base": {"provenance": {**prov, "models": base}}}}  # fmt: skip
    file = tmp_path / "r.json"
    assert figures.source_problems(file, data, "1" * 64, ROOT) == ([], False)
    assert figures.source_problems(file, data, "3" * 64, ROOT) == ([], True)  # ours is stale
    inside = {str(ROOT / "src/nucseg/data/models/default"): {"model.safetensors": "2" * 64}}
    data["chunk_profile"]["base"]["provenance"]["models"] = inside
    assert figures.source_problems(file, data, "1" * 64, ROOT) == ([], True)  # this checkout's


def test_every_quoted_results_file_is_regenerated_by_a_job():
    outputs = {o for job in regenerate.JOBS.values() for o in job.outputs}
    quoted = figures.quoted_results(ROOT)
    left = [str(f) for f in quoted if str(f) not in outputs
            and not str(f).startswith(regenerate.FROZEN)]  # fmt: skip
    assert quoted and left == []
    headline = {"results/unet/default_monuseg-breast.json", "results/unet/default_tnbc.json",
                "results/unet/speed.json", "results/slide/bench_engine.json"}  # fmt: skip
    default = {o for n in regenerate.chosen_names([]) for o in regenerate.JOBS[n].outputs}
    assert headline <= default  # `make results` with no option regenerates the README's headline


def test_regenerate_refuses_an_unknown_job(capsys):
    assert regenerate.main(["--only", "nope"]) == 2
    assert "unknown job" in capsys.readouterr().err
