#!/usr/bin/env bash
# The GPU figures of the README, in one call of under 10 minutes (a 15-minute device lease):
#  1. accuracy: the default recipe (resnet18 from scratch) on rdb-mini over seeds 0-2 next to the
#     plain recipe through cxrlab's pipeline (plain-matched) and written as tutorials write it
#     (plain_recipe.py), all on the same splits; recipe_sweep prints the chosen and the final
#     epoch's model (about 50 s per run on an H200);
#  2. throughput at ResNet-50 with 16 tutorial workers on files rewritten at 299 px (the
#     database's size).
# EXTRA=1 adds ResNet-18 throughput with 4 tutorial workers and the default with weight EMA.
# Usage: DATA=path/to/rdb-mini OUT=results bash benchmarks/gpu_check.sh
set -u
DATA=${DATA:-devdata/rdb-mini}
OUT=${OUT:-gpu-results}
SEEDS=${SEEDS:-0 1 2}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
# shellcheck disable=SC2086
timeout 300 python3 benchmarks/recipe_sweep.py --data "$DATA" --out /tmp/sweep --budget 260 \
  --only default plain-matched --seeds $SEEDS 2> "$OUT/sweep.err" | tee "$OUT/sweep.txt"
# shellcheck disable=SC2086
timeout 120 python3 benchmarks/plain_recipe.py --data "$DATA" --workers 16 --seeds $SEEDS \
  2> "$OUT/plain.err" | tee "$OUT/plain.txt"
timeout 170 python3 benchmarks/throughput.py --device cuda --model resnet50 --image-size 224 \
  --batch-size 128 --workers 16 --n-images 21165 --epochs 3 --file-size 299 --data "$DATA" \
  > "$OUT/bench_r50_w16_299.log" 2>&1
tail -n 14 "$OUT/bench_r50_w16_299.log"
if [ "${EXTRA:-0}" = 1 ]; then
  timeout 100 python3 benchmarks/throughput.py --device cuda --model resnet18 --image-size 224 \
    --batch-size 128 --workers 4 --n-images 8192 --epochs 3 --data "$DATA" \
    > "$OUT/bench_r18_w4.log" 2>&1
  tail -n 14 "$OUT/bench_r18_w4.log"
  # shellcheck disable=SC2086
  timeout 200 python3 benchmarks/recipe_sweep.py --data "$DATA" --out /tmp/sweep --budget 160 \
    --only ema0.998 --seeds $SEEDS 2>> "$OUT/sweep.err" | tee -a "$OUT/sweep.txt"
fi
