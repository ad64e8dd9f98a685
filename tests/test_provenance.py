"""The batch identity's training code: what a commit trains with, found from its sources. Moving or
editing a file changes the key only if the run stages import it and it can change a number."""
import subprocess
from pathlib import Path

import pytest

from pipeline import provenance
from pipeline.provenance import NOT_NUMBERS, RUN_STAGES, batch_key_of_tags, training_code, training_files

ROOT = Path(__file__).resolve().parents[1]

STAGE = "from pipeline.steps.{0} import main\n"
FILES = {
    "stages/__init__.py": "",
    "stages/train.py": STAGE.format("train"),
    "stages/sample.py": STAGE.format("sample"),
    "stages/evaluate.py": STAGE.format("evaluate"),
    "pipeline/__init__.py": "",
    "pipeline/steps/__init__.py": "",
    "pipeline/steps/train.py": "from pipeline import models, tracking\n",
    "pipeline/steps/sample.py": "from pipeline.models import G\n",
    "pipeline/steps/evaluate.py": "def main():\n    from pipeline.metrics import fid  # a lazy import counts\n",
    "pipeline/models.py": "G = 1\n",
    "pipeline/metrics/__init__.py": "",
    "pipeline/metrics/fid.py": "from . import helpers\n",  # relative imports count
    "pipeline/metrics/helpers.py": "X = 2\n",
    "pipeline/tracking.py": "LOGS = True\n",
    "pipeline/report.py": "from pipeline import models\n",
}


def test_training_files_are_the_run_stages_imports_less_what_only_logs():
    assert training_files(FILES) == sorted([
        "pipeline/__init__.py", "pipeline/metrics/__init__.py", "pipeline/metrics/fid.py",
        "pipeline/metrics/helpers.py", "pipeline/models.py", "pipeline/steps/__init__.py",
        "pipeline/steps/evaluate.py", "pipeline/steps/sample.py", "pipeline/steps/train.py",
        "stages/__init__.py", "stages/evaluate.py", "stages/sample.py", "stages/train.py"])


def _commit(repo: Path, files: dict[str, str], message: str) -> str:
    for old in repo.glob("[ps]*/**/*.py"):
        old.unlink()
    for path, text in files.items():
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text(text)
    git = ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", message], check=True)
    return subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()


def test_moving_a_file_changes_the_key_only_if_it_is_training_code(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    key = lambda files, msg: training_code(_commit(tmp_path, files, msg), tmp_path)  # noqa: E731
    base = key(FILES, "base")
    moved_report = {**{k: v for k, v in FILES.items() if k != "pipeline/report.py"},
                    "pipeline/reporting/report.py": FILES["pipeline/report.py"]}
    assert key(moved_report, "move the report") == base
    assert key({**FILES, "pipeline/tracking.py": "LOGS = False\n"}, "edit the logger") == base
    assert key({**FILES, "pipeline/report.py": "# reworded\n"}, "edit the report") == base
    assert key({**FILES, "pipeline/metrics/helpers.py": "X = 3\n"}, "edit training code") != base
    moved_model = {**{k: v for k, v in FILES.items() if k != "pipeline/metrics/helpers.py"},
                   "pipeline/metrics/helpers2.py": "X = 2\n",
                   "pipeline/metrics/fid.py": "from . import helpers2\n"}
    assert key(moved_model, "move training code") != base
    assert key(FILES, "back") == base  # the key is the content, not the commit
    assert training_code("0" * 40, tmp_path) == "commit 000000000000"  # a commit git does not have


def test_this_repositorys_training_code_and_exclusions_are_real():
    """Every module NOT_NUMBERS names is one the run stages import (a renamed one would silently count
    again), and HEAD's training code holds the trainer and the kernel's C++ but not the report."""
    files = {p.relative_to(ROOT).as_posix(): p.read_text() for p in ROOT.glob("[ps]*/**/*.py")
             if p.relative_to(ROOT).parts[0] in ("pipeline", "stages")}
    files |= {p.relative_to(ROOT).as_posix(): "" for p in (ROOT / "pipeline/csrc").iterdir()}
    everything = training_files(files)
    assert "pipeline/trainer.py" in everything and "pipeline/csrc/attention.cpp" in everything
    assert not [p for p in everything if p.startswith(("pipeline/report", "pipeline/grid"))]
    saved = provenance.NOT_NUMBERS
    try:
        provenance.NOT_NUMBERS = ()
        with_all = training_files(files)
    finally:
        provenance.NOT_NUMBERS = saved
    for module in NOT_NUMBERS:
        path = provenance._module_file(module, files)
        assert path and path in with_all and path not in everything, module
    assert {f"{s.replace('.', '/')}.py" for s in RUN_STAGES} <= set(everything)


@pytest.mark.parametrize("tags,machine", [
    ({"runtime.device": "cpu", "machine.cpu_uarch": "AMD Zen 3", "machine.cpu_class": "avx2"}, "AMD Zen 3, avx2"),
    ({"runtime.device": "cuda:0", "machine.gpu": "NVIDIA H200"}, "NVIDIA H200"),
    ({}, "unrecorded")])
def test_a_batch_key_names_the_machine_and_marks_what_was_not_recorded(tags, machine):
    key = batch_key_of_tags(tags)
    assert key[0] == machine and key[3] == "unrecorded" and len(key) == len(provenance.BATCH_FIELDS)
