#!/usr/bin/env bash
# Issue 15 on a GPU machine, one phase per device call (each under 10 minutes), everything logged to $OUT/run.log
# (unbuffered) and the results beside it (a call brings back at most 8 files from $OUT: one phase's worth).
#   check  the CUDA path: model, policy and service tests on the GPU; every torch backend checked against fp32 on
#          the GPU on the held-out items (model.json's `backends` -> $OUT/model-cuda.json)
#   serve  bench.serve_load at 1/16/64/256 clients and 1/64 images per request with the in-process ceiling, and
#          bench.limit (FLOPs against the GPU's conv peak, every stage), with plots
#   train  bench/train_speed.py (ours against airbench94 on the same pack), then the GPU default model
#          (pretrained on the 50,000 training images, fine-tuned on CIFAR-10H 0..6999) -> $OUT/gpu-default/
# Before: bash bench/gpu_carry.sh (here, on the CPU). On the device, carry .whl for check/serve, .data and
# .whl-train for train. --dry-run: tiny settings, on whatever machine this is (the CPU), to prove the script.
# Usage: bash bench/gpu_run.sh check|serve|train|all [--dry-run]
set -uo pipefail
cd "$(dirname "$0")/.."
PHASE=${1:?usage: bash bench/gpu_run.sh check|serve|train|all [--dry-run]}
DRY=${2:-}
OUT=${OUT:-runs/gpu}
PY=${PY:-python3}
PRETRAIN_EPOCHS=${PRETRAIN_EPOCHS:-40}
mkdir -p "$OUT"
LOG="$OUT/run.log"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
for dir in .whl .whl-train; do
  if [ -d "$dir" ] && [ -z "$DRY" ]; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$dir"/*.whl \
      && export PYTHONPATH="$PYTHONPATH:/tmp/site" || { echo "wheel install from $dir failed" | tee -a "$LOG"; exit 1; }
  fi
done
[ -d .data ] && export TEAMING_DATA="$PWD/.data"

step() {  # step NAME COMMAND...: run it, its output into the log, its exit status and time after it
  local name=$1 start=$SECONDS
  shift
  echo "=== $name: $*" | tee -a "$LOG"
  "$@" >>"$LOG" 2>&1
  local rc=$?
  echo "=== $name: exit $rc after $((SECONDS - start)) s" | tee -a "$LOG"
  tail -n 4 "$LOG" | head -n 3
}

env_report() {
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
  $PY -c "import torch, sys; print(sys.version.split()[0], torch.__version__, torch.cuda.is_available(),
torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu', torch.get_num_threads())"
}

check() {
  step env env_report
  local tests=(tests/model tests/policy tests/service -m "not slow")
  [ -n "$DRY" ] && tests=(tests/model/test_runtime.py tests/service/test_backends.py)
  step tests $PY -m pytest -q -p no:cacheprovider "${tests[@]}"
  local model=/tmp/model-cuda items=7000:10000
  [ -n "$DRY" ] && items=9000:9200
  rm -rf $model && cp -r models/cifar10h-default $model
  step backends $PY -m teaming.cli export $model --device auto --no-onnx --items $items \
    --backends fp32,bf16,compiled,compiled-bf16
  cp $model/model.json "$OUT/model-cuda.json"
}

serve() {
  if [ -n "$DRY" ]; then
    step serve_load $PY -m bench.serve_load --levels 1 --images 1 --rounds 1 --seconds 1 --targets bentoml \
      --plot "$OUT/latency.png"
    step limit $PY -m bench.limit --backends fp32 --rounds 1 --seconds 0.3 --service --plot "$OUT"
    return
  fi
  step serve_load $PY -m bench.serve_load --levels 1,16,64,256 --images 1,64 --rounds 3 --seconds 4 \
    --targets bentoml,bare --plot "$OUT/latency.png"
  step limit $PY -m bench.limit --backends eager,fp32,bf16,compiled,compiled-bf16 --rounds 3 --service \
    --plot "$OUT"
}

train() {
  local speed=() model=(--pretrain-epochs "$PRETRAIN_EPOCHS" --epochs 8)
  [ -n "$DRY" ] && speed=(--train-n 2000 --epochs 0.2) && model=(--pretrain-epochs 0.05 --epochs 0.2 --force)
  step train_speed $PY bench/train_speed.py "${speed[@]}"
  step gpu_model $PY -m teaming.cli train --out "$OUT/gpu-default" --pretrain shared "${model[@]}" \
    --hardware-note "Trained on one GPU by bench/gpu_run.sh train (PRETRAIN_EPOCHS=$PRETRAIN_EPOCHS)."
  step evaluate $PY -m teaming.cli evaluate "$OUT/gpu-default"
}

case $PHASE in
  check) check ;;
  serve) serve ;;
  train) train ;;
  all) check && serve && train ;;
  *) echo "unknown phase $PHASE" >&2; exit 2 ;;
esac
