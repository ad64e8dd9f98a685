"""Run records from a published report (ablation.json, with the setup table of the ablation.md beside it),
for grids whose MLflow store is gone. The records hold what the report kept per run (cell, seed, run id,
final metrics, evaluator B's among them where measured) and what it says of all runs alike (machine, device,
precision, versions, commit, evaluator and evaluator B, data, budget); whatever it did not keep is named in the
record's `missing`.

    python -m pipeline.records convert reports/ablation.json
    python -m pipeline.records convert docs/results/2026-11-26-h200/ablation.json --grid default-h200 \\
        --note "..."
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pipeline.errors import UserError
from pipeline.records.format import SCHEMA_VERSION

# the tags a record written from the store carries (tracking.run_tags, machine_tags, the stages' tags)
EXPECTED_TAGS = ("machine.cpu", "machine.cpu_class", "machine.cpu_uarch", "machine.cores", "machine.gpu", "runtime.device",
                 "runtime.precision", "python", "version.torch", "version.torchvision", "version.dvc",
                 "version.mlflow", "version.numpy", "version.scipy", "version.scikit-learn", "git.commit",
                 "evaluator.sha256", "data.source", "data.sha256", "metrics.version")
# ablation.json's environment key -> the run tag it summarises (pipeline.report.analysis.environment)
ENVIRONMENT_TAGS = {"machine_cpu": "machine.cpu", "machine_gpu": "machine.gpu", "device": "runtime.device",
                    "torch": "version.torch", "commit": "git.commit", "evaluator_sha256": "evaluator.sha256",
                    "data_source": "data.source", "data_sha256": "data.sha256", "metrics_version": "metrics.version"}
BUDGET_PARAMS = {"steps": "train.steps", "batch_size": "train.batch_size", "n_samples": "evaluate.n_samples"}
ABSENT_FIELDS = ["run_name", "start_ms", "end_ms", "wall_s", "curves.fid_quick", "curves.gamma.*"]


def _one_value(shown: str) -> str | None:
    """A value of the markdown's setup table when every run had it: None for '?' or 'v1 (12 runs), ...'."""
    shown = shown.strip()
    return None if shown in ("", "?") or re.search(r"\(\d+ runs\)", shown) else shown


def setup_tags(markdown: str) -> dict[str, str]:
    """Precision and versions from the report's setup table (ablation.json leaves them out)."""
    tags: dict[str, str] = {}
    rows = dict(re.findall(r"^\| (device|versions) \| (.*) \|$", markdown, flags=re.M))
    if m := re.fullmatch(r".* \((.*)\)", rows.get("device", "")):
        if value := _one_value(m.group(1)):
            tags["runtime.precision"] = value
    for name, shown in re.findall(r"(torch|dvc|mlflow|python) ([^,]+)", rows.get("versions", "")):
        if value := _one_value(shown):
            tags["python" if name == "python" else f"version.{name}"] = value
    return tags


def _environment_tags(environment: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    """Tags of the values every run shared, and notes on those the runs did not share."""
    tags, notes = {}, []
    for key, tag in ENVIRONMENT_TAGS.items():
        value = environment.get(key)
        if isinstance(value, list):
            notes.append(f"the runs differ in {tag} ({', '.join(map(str, value))}); which run had which is not "
                         "in the report")
        elif value is not None:
            tags[tag] = str(value)
    return tags, notes


def _second_evaluator_tags(section: dict[str, Any]) -> dict[str, str]:
    """Evaluator B's checksum and architecture where every run with its figures shared them (the runs'
    evaluator_b.* metrics come with their metrics)."""
    keys = {"evaluator_b.sha256": "evaluator_b_sha256", "evaluator_b.arch": "arch"}
    return {tag: section[key] for tag, key in keys.items() if isinstance(section.get(key), str)}


def convert(report_json: Path, grid: str | None = None, source: str | None = None,
            note: str = "", extra_tags: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The records of the runs in a published ablation.json (and its ablation.md's setup table), under
    grid `grid` (default: the report's own). `extra_tags`: what is known of every run from elsewhere (the
    machine's class from the experiment log, say: say where in `note`)."""
    data = json.loads(Path(report_json).read_text())
    if not isinstance(data, dict) or not data.get("runs"):
        raise UserError(f"{report_json} has no `runs` list: give an ablation.json written by pipeline.report")
    md = Path(report_json).with_suffix(".md")
    tags, notes = _environment_tags(data.get("environment") or {})
    tags |= _second_evaluator_tags(data.get("second_evaluator") or {})
    tags |= setup_tags(md.read_text()) if md.exists() else {}
    tags |= extra_tags or {}
    grid = grid or data["grid"]
    if grid != data["grid"]:
        notes.insert(0, f"grid `{data['grid']}` of {source or report_json}, renamed `{grid}`")
    params = {param: str(data["budget"][k]) for k, param in BUDGET_PARAMS.items()
              if not isinstance((data.get("budget") or {}).get(k), (list, type(None)))}
    experiment = (data.get("generated_from") or {}).get("experiment")
    records = []
    for run in data["runs"]:
        axes = dict(part.split("=", 1) for part in run["cell"].split(","))
        run_params = {**axes, "seed": str(run["seed"]), **params}
        metrics = {k: float(v) for k, v in run["metrics"].items() if v is not None}
        run_tags = {**tags, "grid.name": grid, "grid.cell": run["cell"], "grid.seed": str(run["seed"])}
        missing = ABSENT_FIELDS + [f"params (all but {', '.join(sorted(run_params))})"]
        missing += [f"tags.{t}" for t in EXPECTED_TAGS if t not in run_tags]
        missing += [f"metrics.{k}" for k, v in run["metrics"].items() if v is None]
        records.append({
            "schema": SCHEMA_VERSION, "source": f"converted from {source or report_json}", "grid": grid,
            "cell": run["cell"], "seed": int(run["seed"]), "run_id": run["run_id"], "run_name": None,
            "experiment": experiment, "start_ms": None, "end_ms": None, "wall_s": None,
            "params": run_params, "metrics": metrics, "curves": {}, "tags": run_tags, "missing": missing,
            "note": "; ".join(filter(None, [*notes, note])),
        })
    return records
