"""The report's sections on the generators themselves: Attention usage (each layer's learned gamma) and each cell's
samples and attention maps from its median run (beside its run record, or from an earlier render)."""
from __future__ import annotations

import shutil
from pathlib import Path

from pipeline.records.format import image_path
from pipeline.report.analysis import Analysis
from pipeline.report.formatting import _fmt, _num, _shown, _slug
from pipeline.report.run_facts import _final_gamma, _param, _values
from pipeline.report.runs import GridRun
from pipeline.stats import t_interval


def _gamma_section(a: Analysis) -> list[str]:
    lines = ["## Attention usage (learned gamma of each attention layer)", ""]
    if not a.gamma_layers:
        return lines + ["No gamma histories in these runs (no attention layers, or not logged).", ""]
    lines += ["An attention layer adds gamma × attention to its input; gamma starts at "
              f"{_shown(_values(a.runs, _param('attention.gamma_init')))}, so how far it moves says how much the "
              "network uses the layer. Its sign is not meaningful (the value projection can flip with it), "
              "so the table gives the final |gamma| per layer, mean ± 95% t-interval over seeds, and the "
              "signed values of the seeds:", "",
              "| cell | " + " | ".join(a.gamma_layers) + " |",
              "| --- | " + " | ".join("---" for _ in a.gamma_layers) + " |"]
    for c in a.cells:
        finals = {layer: [g for r in a.runs if r.cell == c and (g := _final_gamma(r, layer)) is not None]
                  for layer in a.gamma_layers}
        if any(finals.values()):
            lines.append(f"| {c} | " + " | ".join(
                f"{_fmt(*t_interval([abs(g) for g in v])[:2])} ({', '.join(f'{g:+.2f}' for g in v)})" if v else "–"
                for v in finals.values()) + " |")
    return lines + ["", "![gamma_over_training.png](ablation_files/gamma_over_training.png)", ""]


SAMPLES_MANIFEST = "samples.json"  # in ablation_files/: which run each sample image came from


def _samples(a: Analysis, out: Path, previous: Path | None = None) -> list[str]:
    """Each cell's images from its median-FID run, or, where that run's images are nowhere (a record
    converted from an older report), from the run nearest the median that has them: those beside its run
    record (format.image_path), else those an earlier render left in `previous` (the report's
    ablation_files/, listed in its samples.json), so the records written before runs kept their images
    keep the report's."""
    import json

    lines = ["## Samples and attention of each cell's median run (by FID)", ""]
    kept = {}
    if previous is not None and (previous / SAMPLES_MANIFEST).exists():
        kept = json.loads((previous / SAMPLES_MANIFEST).read_text())
    manifest = {}

    def fetch(run: GridRun, art: str, target: Path) -> bool:
        beside = image_path(run.record, art) if run.record is not None else None
        if beside is not None and beside.exists():
            shutil.copy2(beside, target)
            return True
        if kept.get(target.name) == run.run_id and (previous / target.name).exists():
            shutil.copy2(previous / target.name, target)
            return True
        return False

    for c in a.cells:
        cell_runs = [r for r in a.runs if r.cell == c]
        med = _median_run(cell_runs)
        lines += [f"### {c}", ""]
        shown = None
        for run in sorted(cell_runs, key=lambda r: (abs(r.metrics["fid"] - med.metrics["fid"]), r.seed)):
            grid_png = out / f"{_slug(c)}-grid.png"
            if fetch(run, "grid.png", grid_png):
                shown = run
                manifest[grid_png.name] = run.run_id
                attention = out / f"{_slug(c)}-attention.png"
                if fetch(run, "attention.png", attention):
                    manifest[attention.name] = run.run_id
                break
        if shown is None:
            lines += [f"median run: seed {med.seed}, FID {_num(med.metrics['fid'])}, run `{med.run_id}`", "",
                      "No images: no run of this cell has them beside its run record or in an earlier render.", ""]
            continue
        note = "the median run" if shown is med else (f"the run nearest the median (seed {med.seed}, FID "
                                                       f"{_num(med.metrics['fid'])}) that has its images")
        lines += [f"seed {shown.seed}, FID {_num(shown.metrics['fid'])}, run `{shown.run_id}`: {note}", ""]
        for art in ("grid.png", "attention.png"):
            if (out / f"{_slug(c)}-{art}").exists():
                lines.append(f"![{c} {art}](ablation_files/{_slug(c)}-{art})")
        lines.append("")
    (out / SAMPLES_MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return lines


def _median_run(runs: list[GridRun]) -> GridRun:
    ordered = sorted(runs, key=lambda r: r.metrics["fid"])
    return ordered[(len(ordered) - 1) // 2]
