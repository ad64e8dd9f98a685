"""The report's Second evaluator section: each FID and classifier-score verdict of the primary batch under
evaluator A and evaluator B, and whether it holds under both (pipeline.report.second_evaluator)."""
from __future__ import annotations

from pipeline.report.analysis import Analysis
from pipeline.report.formatting import _num, _shown
from pipeline.report.render_contrasts import _estimate, _short_verdict
from pipeline.report.second_evaluator import CHECKED, NOT_MEASURED_B, Check, second_evaluator


def _holds(c: Check) -> str:
    return {True: "**yes**", False: "**no**", None: "–"}[c.holds]


def _second_evaluator_section(a: Analysis) -> list[str]:
    """Each FID and classifier-score verdict of the primary batch under evaluator A and evaluator B."""
    s = second_evaluator(a)
    lines = ["## Second evaluator (primary batch: does each verdict hold under evaluator B?)", ""]
    if not s.measured:
        return lines + [f"Evaluator B: {NOT_MEASURED_B}. None of the primary batch's {s.runs} runs has its "
                        "figures (`evaluator_b.fid`, `evaluator_b.classifier_score`). Evaluator B is a second "
                        "classifier (another architecture and seed, the same training split: stage "
                        "train_evaluator_b) whose figures the evaluate stage logs beside evaluator A's; for runs "
                        "that have them, this section checks each FID and classifier-score verdict under both.", ""]
    fid_margin = (f"±{_num(s.margins['fid'])} (±{_num(a.margin('fid'))} × B's floor FID {_num(s.floor_b.get('fid'))}"
                  f" / A's {_num(s.floor_a.get('fid'))}: the same multiple of its own real-data floor)"
                  if s.floor_a.get("fid") and s.floor_b.get("fid") else f"±{_num(s.margins['fid'])} (A's: no floors)")
    lines += [f"Evaluator B (`{_shown(s.archs)}`, checksum `{_shown(s.checksums, 12)}`; a second classifier, "
              "another architecture and seed, trained on the same split) scored the same samples as evaluator A "
              f"in {s.runs_with_b} of the primary batch's {s.runs} runs. Its contrasts go through the same "
              "code as A's: the seed as the unit, Holm over each metric's contrasts, the four outcomes. Its FID "
              f"is a distance in other features, so its FID margin is {fid_margin}; the classifier score's is "
              f"A's, ±{_num(s.margins['classifier_score'])}. A verdict **holds** when B gives the same outcome "
              "and, for a difference that matters, the same better level. Estimates: mean difference and Holm "
              "interval.", ""]
    if len(s.checksums) > 1:
        lines += [f"**Evaluator B differs between these runs** ({len(s.checksums)} checksums): its contrasts "
                  "mix judges.", ""]
    lines += ["| metric | comparison | evaluator A | A's verdict | evaluator B | B's verdict | holds under both |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for c in s.checks:
        lines.append(f"| {CHECKED[c.a.metric]} | {c.a.axis}: {c.a.a} − {c.a.b} | {_estimate(c.a)} | "
                     f"{_short_verdict(c.a)} | {_estimate(c.b)} | {_short_verdict(c.b)} | {_holds(c)} |")
    held = [c for c in s.checks if c.holds is not None]
    broken = [f"{CHECKED[c.a.metric]} {c.a.a} − {c.a.b}" for c in held if not c.holds]
    lines += ["", f"{sum(bool(c.holds) for c in held)} of {len(held)} verdicts hold under both evaluators"
              + (f"; not: {', '.join(broken)}." if broken else "."), ""]
    return lines
