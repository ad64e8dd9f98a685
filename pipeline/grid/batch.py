"""One grid, one batch. A grid resumed on another machine class, precision, training code, metrics code or
evaluator would leave its runs in two batches (pipeline.provenance: what the runs of a pair must
share), and the report, which reads its verdict from one complete batch, would have none. run_grid asks
`check_one_batch` before it starts anything: it compares the batch a run started here would belong to with
the batches of the grid's finished runs, and refuses where it would be a new one."""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

from pipeline.config import Params
from pipeline.errors import UserError
from pipeline.grid.spec import GridSpec
from pipeline.provenance import BATCH_FIELDS, batch_key_of_tags

# batch fields that the machine running a run decides (the rest: the code and evaluator the run is given)
MACHINE_FIELDS = ("machine", "device", "precision")


def tags_here(p: Params, spec: GridSpec) -> dict[str, str]:
    """The tags a run of this grid started on this machine, from this checkout, would log, as far as
    batch_key_of_tags reads them (pipeline/steps/train.py and evaluate.py write the real ones)."""
    import torch

    from pipeline import cpu, tracking
    from pipeline.evaluator import EVALUATOR_FILE, weights_sha256
    from pipeline.metrics.summary import METRICS_VERSION

    want = spec.device or p.train.device
    use_cuda = want == "cuda" or (want == "auto" and torch.cuda.is_available())
    device = "cuda:0" if use_cuda else "cpu"
    precision = p.train.precision
    if precision == "auto":  # as pipeline.runtime.resolve_runtime decides it
        fast_bf16 = torch.cuda.is_bf16_supported() if use_cuda else cpu.has_fast_bf16()
        precision = "bf16" if fast_bf16 else "fp32"
    tags = {**tracking.machine_tags(device), "runtime.device": device, "runtime.precision": precision,
            "git.commit": tracking.git_commit(), "metrics.version": str(METRICS_VERSION)}
    if EVALUATOR_FILE.exists():  # without it the evaluate stage stops anyway, with its own message
        tags["evaluator.sha256"] = weights_sha256(EVALUATOR_FILE)
    return tags


def check_one_batch(grid: str, finished_tags: Iterable[Mapping[str, str]], here: Mapping[str, str],
                    machine_too: bool = True, skip: Iterable[str] = ()) -> None:
    """Raises UserError when runs started with the tags `here` would not join a batch of the grid's finished
    runs. `machine_too=False` (the Ray runner: the cluster's machines run the runs) compares the code and the
    evaluator only; `skip` names BATCH_FIELDS an axis of the grid varies, which differ by design."""
    ignored = set(skip) | (set() if machine_too else set(MACHINE_FIELDS))

    def key(tags: Mapping[str, str]) -> tuple[str, ...]:
        # the device's type only: every local worker sees its GPU as cuda:0
        return tuple("-" if name in ignored else v.split(":")[0] if name == "device" else v
                     for name, v in zip(BATCH_FIELDS, batch_key_of_tags(tags)))

    finished = Counter(key(tags) for tags in finished_tags)
    mine = key(here)
    if not finished or mine in finished:
        return
    theirs, n = finished.most_common(1)[0]
    differ = "; ".join(f"{name}: {a} there, {b} here" for name, a, b in zip(BATCH_FIELDS, theirs, mine) if a != b)
    raise UserError(
        f"grid {grid!r}: its {n} finished run(s) are one batch and a run started here would be another "
        f"({differ}); the report would then split the grid by batch and have no complete one. Finish the grid "
        "where its runs ran (the same CPU design and class, precision and commit), start a new grid for a new "
        "batch (--name), or pass --allow-new-batch to mix them knowingly")


def skipped_fields(axes: Mapping[str, list]) -> list[str]:
    """BATCH_FIELDS that a grid's own axes vary: a grid over train.precision has one precision per cell."""
    out = []
    if "train.precision" in axes:
        out.append("precision")
    if "train.device" in axes:
        out += ["machine", "device", "precision"]
    return out
