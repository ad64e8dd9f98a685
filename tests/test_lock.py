"""main reproduces itself: the committed dvc.lock was made by the committed code and params. `dvc status` in a
fresh clone may find outputs missing (nothing is in its cache), never a modified code dependency or a
changed param; the message names the stage and how to refresh the lock."""
import json
import subprocess

import pytest

from e2e import ROOT, env, run

REFRESH = "refresh it with `make lock` (dvc repro on the default params), then commit dvc.lock and metrics/"


def stale_entries(status: dict) -> dict[str, list[str]]:
    """stage -> what `dvc status --json` says changed in its code or params (outputs that are missing, and
    deps that are outputs of an earlier stage, are not the lock's fault in a fresh clone)."""
    stale: dict[str, list[str]] = {}
    for stage, changes in status.items():
        for change in changes:
            if not isinstance(change, dict):
                continue  # a string such as "always changed": nothing a lock refresh changes
            for path, state in change.get("changed deps", {}).items():
                if state == "modified":
                    stale.setdefault(stage, []).append(f"{path} modified")
            for path, params in change.get("changed params", {}).items():
                for key, state in params.items():
                    stale.setdefault(stage, []).append(f"param {key} {state}")
    return stale


@pytest.mark.slow  # a git clone and `dvc status`
def test_the_committed_lock_matches_the_committed_code_and_params(tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(ROOT), str(clone)], check=True)
    status = json.loads(run(["dvc", "status", "--json"], clone, env={**env(), "DVC_NO_ANALYTICS": "1"}).stdout)
    stale = stale_entries(status)
    assert not stale, "dvc.lock does not match main's code and params: " + "; ".join(
        f"stage {stage}: {', '.join(what[:4])}{f' (+{len(what) - 4} more)' if len(what) > 4 else ''}"
        for stage, what in stale.items()) + f". {REFRESH}"


def test_the_check_names_a_stale_stage():
    status = {"train": [{"changed deps": {"pipeline/seeding.py": "modified", "data/prepared": "deleted"}},
                        {"changed outs": {"models/generator.pt": "not in cache"}}],
              "sample": [{"changed params": {"params.yaml": {"sample.n": "modified"}}}],
              "report": ["always changed"],
              "prepare": [{"changed outs": {"data/prepared": "not in cache"}}]}
    assert stale_entries(status) == {"train": ["pipeline/seeding.py modified"],
                                     "sample": ["param sample.n modified"]}
