#!/usr/bin/env bash
# The default ablation grid on one GPU machine that has no DVC (the grid's local runner), logged to an
# MLflow store of its own and packed for the way back, with the wall time of the grid.
#
#   bash bench/gpu_grid.sh OUT_DIR [extra `pipeline.grid run` options, e.g. --jobs 9]
#
# Environment: DEVICE (cuda), JOBS (9), GRID_LIMIT_S (the grid is stopped after this many seconds and
# what finished is packed; 480), ROOT (this checkout). MLflow records artifact locations as absolute
# paths, so the grid runs at ROOT, the path the store is read from afterwards. Unpack the result there:
#   cat store.tgz.part-* | tar xzf - -C "$ROOT"
#   MLFLOW_TRACKING_URI=sqlite:///$ROOT/stores/default-gpu/mlflow.db python -m pipeline.report --grid default
# The run folders come back too (runs.tgz, small): where the store cannot (the device tool returns files
# of at most 16 MiB; 24 runs' per-step metrics made a larger store on 2026-11-26), rebuild it from them:
#   tar xzf runs.tgz && python -m pipeline.run_import .grid/default --tag machine.gpu=...
set -euo pipefail
out=$(realpath "${1:?usage: bash bench/gpu_grid.sh OUT_DIR [grid options]}")
shift
root=${ROOT:-$(git rev-parse --show-toplevel)}
device=${DEVICE:-cuda}
jobs=${JOBS:-9}
if [ "$(pwd -P)" != "$root" ]; then
  mkdir -p "$root"
  cp -a . "$root"/
  cd "$root"
fi
store=stores/default-gpu
rm -rf "$store" .grid
mkdir -p "$store"
export MLFLOW_TRACKING_URI="sqlite:///$root/$store/mlflow.db" PYTHONUNBUFFERED=1
py=$(command -v python3 || command -v python)
"$py" - <<'EOF'
import os, torch, mlflow
print("torch", torch.__version__, "mlflow", mlflow.__version__, "cores", os.cpu_count())
if torch.cuda.is_available():
    print("gpu", torch.cuda.get_device_name(), f"{torch.cuda.mem_get_info()[1] / 2**30:.0f} GiB")
EOF

pack() {
  tar czf - --exclude='*/artifacts/model' "$store" | split -b 15m - "$out/store.tgz.part-"
  tar czf "$out/runs.tgz" --exclude='*.npz' --exclude='*.pt' --exclude='*.gif' .grid 2>/dev/null || true
  ls -la "$out"
}

# GPU memory and utilisation every 2 s, for sizing --jobs
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu --format=csv -l 2 > "$out/gpu_usage.csv" 2>&1 &
  # stopped on exit: a live child holding the caller's pipe kept a run waiting until its time limit
  monitor=$!
  trap 'kill $monitor 2>/dev/null' EXIT
fi

# every cell at 50 steps first: a failure then costs seconds, not the grid
t0=$(date +%s)
if ! "$py" -m pipeline.grid run --runner local --device "$device" --name gpu-smoke --steps 50 --seeds 0 \
    --n-samples 500 --jobs 6 --no-report; then
  tail -n 30 .grid/gpu-smoke/*/run.log || true
  pack
  exit 1
fi
echo "gpu_grid: smoke grid (6 runs x 50 steps) took $(( $(date +%s) - t0 )) s"

# the grid itself with a cold compiler cache, as a first run on a new machine would have it
export TORCHINDUCTOR_CACHE_DIR=$(mktemp -d)
t0=$(date +%s)
rc=0
timeout "${GRID_LIMIT_S:-480}" "$py" -m pipeline.grid run --runner local --device "$device" --jobs "$jobs" \
  --no-report "$@" || rc=$?
echo "gpu_grid: default grid exit $rc, wall $(( $(date +%s) - t0 )) s"
"$py" -m pipeline.grid status || true
pack
