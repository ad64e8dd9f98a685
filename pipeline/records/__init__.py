"""Run records: one small JSON file per finished grid run, kept in git under results/<grid>/, so a grid's
results outlive the MLflow store (mlflow.db is one machine's, and not in git).

A record holds what the report reads of a run: schema version, grid, cell, seed, MLflow run id, run
name and experiment, start and end (ms since the epoch) and wall time (s, start to end), every param,
the final metrics (each metric's latest value, as the report uses them; evaluator B's as evaluator_b.*,
absent from runs evaluated before it existed), the curves `fid_quick`, `gamma.*` and `full.*` (the
full-size evaluations at train.full_eval_at) as lists of [step, value], thinned to at most
MAX_CURVE_POINTS, the tags (all but MLflow's large bookkeeping), `source` (`run`, `mlflow run` when
exported from the store, or `converted from <file>`) and `missing` (the fields it could not fill).
A record exists only for a run that is FINISHED and evaluated (has `fid`).

Beside each record, the run's sample images: `<record stem>-grid.png` and, with attention,
`<record stem>-attention.png` (the report's sample images).

Written by the evaluate stage at the end of every grid run from the run's journal (what it logged:
pipeline.tracking.new_journal; both runners: DVC_ROOT points a queued experiment's temporary copy at the
real project) and its samples/, or by `python -m pipeline.records export --grid NAME` from the store, for
runs made before records existed (the records converted from published reports whose store was gone,
`source` `converted from <file>`, were made by a converter since removed:
`git show 9fd0c95:pipeline/records/convert.py`).
`python -m pipeline.report --grid NAME` builds the report from them alone;
`python -m pipeline.run_import results/NAME` loads them into an MLflow store (for its UI).

Modules: `format` (file names, the JSON text, thinning, reading), `export` (a run's journal or an MLflow
run -> its record and images).
"""
from pipeline.records.format import (IMAGES, MAX_CURVE_POINTS, RESULTS_DIR, SCHEMA_VERSION, grid_folder, image_path,
                                     read_record, read_records, record_name, thin, to_text, write_record)

__all__ = ["IMAGES", "MAX_CURVE_POINTS", "RESULTS_DIR", "SCHEMA_VERSION", "grid_folder", "image_path", "read_record",
           "read_records", "record_name", "thin", "to_text", "write_record"]
