#!/bin/bash
# search round 4: Intel AMX, bf16 (auto), 1 thread per run, 3 seeds; default vs R1 gamma 1 and 3
# WT: the pinned worktree (beside the checkout), OUT: where the figures go
WT=${WT:-$(git rev-parse --show-toplevel)/../wt-s4}
OUT=${OUT:-$WT/../search4}
mkdir -p "$OUT"
cd "$WT"
AT="6000 8000 10000 12000 12500"
for s in 0 1 2; do
  nohup .venv/bin/python bench/bench_quality.py --seeds $s --threads 1 --at $AT --json $OUT/default.s$s.json > $OUT/default.s$s.log 2>&1 &
  echo $! >> $OUT/pids
  nohup .venv/bin/python bench/bench_quality.py --seeds $s --threads 1 --at $AT --set train.r1=1.0 --json $OUT/r1g1.s$s.json > $OUT/r1g1.s$s.log 2>&1 &
  echo $! >> $OUT/pids
  nohup .venv/bin/python bench/bench_quality.py --seeds $s --threads 1 --at $AT --set train.r1=3.0 --json $OUT/r1g3.s$s.json > $OUT/r1g3.s$s.log 2>&1 &
  echo $! >> $OUT/pids
done
