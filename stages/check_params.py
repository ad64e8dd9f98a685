"""DVC stage `check_params`: validate the whole params.yaml before any other stage runs.

DVC deletes a stage's outputs just before running it, so a bad `-S key=value` caught only inside
`train` would already have cost the previous run's outputs. Every stage depends on this one; it
fails first and nothing else is touched. Its output never changes, so a valid edit re-runs only
the stages whose own params changed."""
from pathlib import Path

from pipeline import store
from pipeline.cli import run_stage
from pipeline.fileio import write_text

MARKER = Path("data/params.ok")

if __name__ == "__main__":
    run_stage("check_params", lambda params: write_text(MARKER, "params.yaml is valid\n"), preflight=store.preflight)
