#!/bin/bash
# Issue 29's published grid: 10 seeds x 6 cells at 18,000 steps (the budget read off the pilot, docs/grid.md
# "The grid's budget"), from a pinned worktree so the code under it does not move. Seeds 2-11: the pilot used
# seeds 0 and 1 on the same code, whose runs would repeat the pilot's up to 18,000 steps and were what chose the
# budget. Local runner, 2 runs at a time, 1 thread each, on an Intel AMX machine in bf16 (the pilot's batch
# class). The records land in the worktree's results/grid18k/; copy them to main's and commit seed by seed. A
# second invocation runs only what is missing (after `python -m pipeline.run_import results/grid18k` where the
# MLflow store is gone); a killed run continues from its checkpoint in the worktree's .grid/.
set -euo pipefail
COMMIT=${1:-HEAD}
MAIN=$(git rev-parse --show-toplevel)
WT=${WT:-$MAIN/../wt-g18k}  # the pinned worktree, beside the checkout
if [ ! -d "$WT" ]; then
  git worktree add --detach "$WT" "$COMMIT"
  mkdir -p "$WT/data" "$WT/models" "$WT/metrics" "$WT/results/grid18k"
  cp -r "$MAIN/data/prepared" "$WT/data/"
  cp "$MAIN"/models/evaluator.pt "$MAIN"/models/evaluator_b.pt "$WT/models/"
  cp "$MAIN"/metrics/evaluator.json "$MAIN"/metrics/evaluator_b.json "$WT/metrics/"
  ln -s "$MAIN/.venv" "$WT/.venv"
  cp "$MAIN"/results/grid18k/*.json "$WT/results/grid18k/" 2>/dev/null || true
fi
cd "$WT"
git log -1 --format='pinned at %H' && lscpu | grep -m1 'Model name'
# One batch: a run on another CPU design or class would be a second batch (analysis.batch_key), and the grid
# would have no complete primary. Refuse rather than mix.
.venv/bin/python - <<'PY'
import glob, json, sys
from pipeline import cpu
here = (cpu.microarchitecture(), cpu.effective_class())
for path in sorted(glob.glob("results/grid18k/*.json")):
    tags = json.load(open(path))["tags"]
    there = (tags.get("machine.cpu_uarch"), tags.get("machine.cpu_class"))
    if there != here:
        sys.exit(f"{path} ran on {there[0]} ({there[1]}), this machine is {here[0]} ({here[1]}): "
                 "continue grid18k on a machine of the records' class, or its runs would be two batches")
print(f"machine {here[0]} ({here[1]}) matches the records")
PY
if ls results/grid18k/*.json >/dev/null 2>&1 && [ ! -f mlflow.db ]; then .venv/bin/python -m pipeline.run_import results/grid18k; fi
exec .venv/bin/python -m pipeline.grid run --runner local --name grid18k --steps 18000 \
  --seeds 2 3 4 5 6 7 8 9 10 11 --jobs 2 --no-report
