"""Every benchmark script still imports: a rename in one script or in nucseg must not leave
another script broken until someone next runs it (bench_viewer.py imported a helper that
bench_slide.py no longer had, and nothing noticed)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(BENCHMARKS.glob("*.py"))


def test_the_benchmarks_folder_has_scripts():
    assert len(SCRIPTS) >= 30


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_a_benchmark_script_imports(script, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    name = f"_bench_import_{script.stem}"
    spec = importlib.util.spec_from_file_location(name, script)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)  # runs its imports and definitions, not its main()


def test_the_fourth_rounds_choice_takes_monuseg_then_the_source_mean_on_a_tie(monkeypatch):
    script = BENCHMARKS / "select_multisource.py"
    spec = importlib.util.spec_from_file_location("_select_multisource", script)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec.loader.exec_module(module)

    def record(monuseg, mean):
        return {"sources": {"monuseg": {"aji": monuseg}}, "source_mean_aji": mean}

    records = {"default": record(0.6198, 0.6009), "a": record(0.6230, 0.5950),
               "b": record(0.6225, 0.5990), "c": record(0.6100, 0.6200)}  # fmt: skip
    assert module.choose_by_monuseg(records) == "b"  # a and b tie on MoNuSeg; b's mean is higher
    assert module.choose_by_monuseg({"default": records["default"], "c": records["c"]}) == "default"
    default = record(0.6198, 0.6009)
    facts = {"network": "n", "weights_mib": 10, "parameters": 100}
    assert module._eligible(record(0.5, 0.5910), default, facts, facts, "monuseg") == {
        "source_mean_within_margin": True,
        "weights_within_16_mib": True,
        "same_network": True,
    }
    assert not module._eligible(record(0.7, 0.5900), default, facts, facts, "monuseg")[
        "source_mean_within_margin"
    ]
