#!/bin/bash
# Issue 29's pilot: 2 seeds x 6 cells at twice the planned budget (24,000 steps), from a pinned worktree,
# with full-size evaluations at 8k, 10k, 12k, 15k, 18k, 21k and 24k, so that every budget from 12,000 to
# 24,000 steps has >= 3 of them in its last 40% (the drift test's window). Local runner, 2 runs at a
# time, 1 thread each. The records land in the worktree's results/pilot/ and are copied to main's as
# the runs finish. A second invocation runs only what is missing (after `python -m pipeline.run_import
# results/pilot` on a machine whose MLflow store is gone).
set -euo pipefail
COMMIT=${1:-HEAD}
MAIN=$(git rev-parse --show-toplevel)
WT=${WT:-$MAIN/../wt-grid}  # the pinned worktree, beside the checkout
if [ ! -d "$WT" ]; then
  git worktree add --detach "$WT" "$COMMIT"
  mkdir -p "$WT/data" "$WT/models" "$WT/metrics"
  cp -r "$MAIN/data/prepared" "$WT/data/"
  cp "$MAIN"/models/evaluator.pt "$MAIN"/models/evaluator_b.pt "$WT/models/"
  cp "$MAIN"/metrics/evaluator.json "$MAIN"/metrics/evaluator_b.json "$WT/metrics/"
  ln -s "$MAIN/.venv" "$WT/.venv"
  # the pilot's only change to the defaults: denser full-size evaluations
  sed -i 's/^  full_eval_at: .*/  full_eval_at: [0.333333, 0.416667, 0.5, 0.625, 0.75, 0.875, 1.0]/' "$WT/params.yaml"
  mkdir -p "$WT/results/pilot"
  cp "$MAIN"/results/pilot/*.json "$WT/results/pilot/" 2>/dev/null || true
fi
cd "$WT"
grep -n "full_eval_at" params.yaml
if ls results/pilot/*.json >/dev/null 2>&1 && [ ! -f mlflow.db ]; then .venv/bin/python -m pipeline.run_import results/pilot; fi
exec .venv/bin/python -m pipeline.grid run --runner local --name pilot --steps 24000 --seeds 0 1 --jobs 2 --no-report
