"""dvc.yaml knows each stage's code, and pipeline/ has no import circle: both read from the source (ast)."""
import subprocess
import sys

import pytest
import yaml

from stage_deps import ROOT, closure, code_files, dvc_code_deps, import_cycles, import_graph, imports_of, stage_module

STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("stage", list(STAGES))
def test_each_stages_code_deps_are_exactly_the_modules_it_imports(stage):
    """A change to any module a stage can import reruns the stage, and nothing else is listed: the files
    under pipeline/ and stages/ in its deps (folders expanded) are the transitive imports of its command."""
    listed = dvc_code_deps(STAGES[stage].get("deps", []))
    imported = code_files(stage_module(STAGES[stage]["cmd"]))
    missing, extra = sorted(imported - listed), sorted(listed - imported)
    assert not missing and not extra, (
        f"dvc.yaml stage {stage!r}: deps lack {missing or 'nothing'}, list what it does not import "
        f"{extra or 'nothing'}; `python tests/stage_deps.py` prints each stage's code deps")


def test_the_derivation_sees_lazy_imports_packages_and_the_kernel_source():
    # a function-level import (the trainer's torchrun path) and the C++ the kernel compiles count
    assert "pipeline.distributed" in imports_of("pipeline.trainer")
    files = code_files("stages.train")
    assert {"pipeline/seeding.py", "pipeline/distributed.py", "pipeline/csrc/attention.cpp",
            "pipeline/__init__.py", "pipeline/metrics/fid.py"} <= files
    assert "pipeline/report/analysis.py" not in files and "pipeline.report" not in closure("stages.train")


def test_pipeline_has_no_import_circle():
    assert import_cycles(import_graph()) == []


def test_the_circle_finder_finds_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert sorted(import_cycles(graph)) == [["a", "b", "c"], ["e"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_the_stage_deps_tool_prints_every_stage():
    out = subprocess.run([sys.executable, str(ROOT / "tests/stage_deps.py")], capture_output=True, text=True,
                         check=True).stdout
    assert all(f"{stage}:" in out for stage in STAGES) and "      - pipeline/trainer.py" in out


# what only the grid, the report and the tools use: editing it must leave every stage's outputs up to date
NOT_A_STAGES_CODE = ("pipeline/report/", "pipeline/grid/", "pipeline/grid_runs.py", "pipeline/provenance.py",
                     "pipeline/params_doc.py", "pipeline/run_import.py", "pipeline/resample.py", "pipeline/stats.py",
                     "pipeline/generate.py", "pipeline/records/__main__.py")


@pytest.mark.parametrize("stage", [s for s in STAGES if s != "report"])
def test_the_report_grid_and_tools_are_no_code_of_the_run_stages(stage):
    """A change to the report, the grid's runners and store look-ups, the batch identity or the params
    docs leaves `dvc status` clean for every stage but report (which never lists them as deps)."""
    listed = dvc_code_deps(STAGES[stage].get("deps", []))
    assert not [p for p in listed if p.startswith(NOT_A_STAGES_CODE)], stage
    # each named path exists: a rename would otherwise empty this test
    assert all((ROOT / p).exists() for p in NOT_A_STAGES_CODE)


def test_the_library_never_imports_an_entry_point():
    """stages/ are thin entry points over pipeline/ (pipeline.steps holds their work): no pipeline module
    imports a stages module, so running a stage's work in-process (the grid's cell) needs no entry point."""
    graph = import_graph()
    crossing = {m: sorted(d for d in deps if d.split(".")[0] == "stages")
                for m, deps in graph.items() if m.split(".")[0] == "pipeline"}
    assert {m: d for m, d in crossing.items() if d} == {}
    assert "pipeline.steps.train" in imports_of("stages.train")
