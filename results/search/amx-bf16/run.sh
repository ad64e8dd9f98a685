#!/bin/bash
# search round 4: Intel AMX, bf16 (auto), 1 thread per run, 3 seeds; default vs R1 gamma 1 and 3
cd /work/wt-s4
AT="6000 8000 10000 12000 12500"
for s in 0 1 2; do
  nohup .venv/bin/python bench/bench_quality.py --seeds $s --threads 1 --at $AT --json /work/search4/default.s$s.json > /work/search4/default.s$s.log 2>&1 &
  echo $! >> /work/search4/pids
  nohup .venv/bin/python bench/bench_quality.py --seeds $s --threads 1 --at $AT --set train.r1=1.0 --json /work/search4/r1g1.s$s.json > /work/search4/r1g1.s$s.log 2>&1 &
  echo $! >> /work/search4/pids
  nohup .venv/bin/python bench/bench_quality.py --seeds $s --threads 1 --at $AT --set train.r1=3.0 --json /work/search4/r1g3.s$s.json > /work/search4/r1g3.s$s.log 2>&1 &
  echo $! >> /work/search4/pids
done
