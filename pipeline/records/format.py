"""A run record on disk: where it lives, its name, its JSON text (compact curves, one entry a line
elsewhere, so git diffs stay small), the run's sample images beside it, the curve thinning the report
shares, and reading one back."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from pipeline.errors import UserError
from pipeline.fileio import write_text

SCHEMA_VERSION = 1
RESULTS_DIR = Path("results")  # under the project root; one folder per grid
# points kept per curve: the default grid logs 50 gammas per layer (every 100 of 5,000 steps) and 5 quick
# FIDs, which stay whole; a longer run keeps every k-th point and always the last (the final value)
MAX_CURVE_POINTS = 50
# the run's samples/ images kept beside its record as <record stem>-<name> (the report's sample images)
IMAGES = ("grid.png", "attention.png")
REQUIRED = ("schema", "grid", "cell", "seed", "run_id", "params", "metrics", "tags", "curves")


def thin(curve: list[tuple[int, float]], max_points: int = MAX_CURVE_POINTS) -> list[tuple[int, float]]:
    """At most `max_points` of `curve` (sorted by step): every k-th point counted back from the last, so
    the last point (the final value) is always kept. A run's journal and the store's export thin alike,
    so a run's record is the same from either."""
    if len(curve) <= max_points:
        return list(curve)
    k = math.ceil(len(curve) / max_points)
    return list(curve[::-1][::k][::-1])


def _slug(s: str) -> str:  # the rule of reports/<grid>/ (pipeline.report.formatting: a circular import)
    return re.sub(r"[^A-Za-z0-9_-]+", "_", s)


def grid_folder(grid: str, results: Path) -> Path:
    """results/<grid>/ (the grid's name made file-safe, as reports/<grid>/)."""
    return Path(results) / _slug(grid)


def record_name(record: dict[str, Any]) -> str:
    """'post-hinge-s3-1b68c04b.json': the cell's values, the seed and the run id's first 8 characters."""
    values = "-".join(part.split("=", 1)[-1] for part in record["cell"].split(","))
    return f"{_slug(values)}-s{record['seed']}-{record['run_id'][:8]}.json"


def image_path(record: Path, name: str) -> Path:
    """Where image `name` (one of IMAGES) of the run recorded in `record` lives: beside it, as
    'post-hinge-s3-1b68c04b-grid.png'."""
    record = Path(record)
    return record.with_name(f"{record.stem}-{name}")


def to_text(record: dict[str, Any]) -> str:
    """JSON with one field a line, and one entry a line inside params, tags, metrics, curves and missing;
    deeper lists (the curves' [step, value] points) stay on one line."""
    def dump(value: Any, depth: int) -> str:
        pad, end = "  " * (depth + 1), "\n" + "  " * depth
        if isinstance(value, dict) and value and depth < 2:
            items = [f"{json.dumps(k)}: {dump(v, depth + 1)}" for k, v in sorted(value.items())]
            return "{\n" + ",\n".join(pad + item for item in items) + end + "}"
        if isinstance(value, list) and value and depth < 2:
            return "[\n" + ",\n".join(pad + dump(v, depth + 1) for v in value) + end + "]"
        return json.dumps(value, sort_keys=True, separators=(",", ":"))

    return dump(record, 0) + "\n"


def write_record(record: dict[str, Any], folder: Path) -> Path:
    """Writes `record` into `folder` atomically; an unchanged file is left alone (no churn in git)."""
    path = Path(folder) / record_name(record)
    text = to_text(record)
    if not (path.exists() and path.read_text() == text):
        write_text(path, text)
    return path


def read_record(path: Path) -> dict[str, Any]:
    """One record, checked: its schema is one this code reads and the fields the report needs are there."""
    try:
        record = json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not a run record (invalid JSON: {e}); restore it with `git checkout {path}` "
                        f"or delete it") from None
    if not isinstance(record, dict) or "schema" not in record:
        raise UserError(f"{path} is not a run record (no `schema` field); move other files out of {Path(path).parent}")
    if record["schema"] > SCHEMA_VERSION:
        raise UserError(f"{path} is a run record of schema {record['schema']}; this code reads schema "
                        f"{SCHEMA_VERSION} and older: update the project (git pull)")
    absent = [k for k in REQUIRED if k not in record]
    if absent:
        raise UserError(f"{path}: run record without {', '.join(absent)}; rewrite it with "
                        f"`python -m pipeline.records export --grid {record.get('grid', 'NAME')}`")
    return record


def read_records(folder: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Every record (*.json) of one grid's folder, by file name; none when the folder does not exist."""
    return [(path, read_record(path)) for path in sorted(Path(folder).glob("*.json"))]
