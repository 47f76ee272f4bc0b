#!/usr/bin/env bash
# The GPU figures of the README, in one call that fits a 15-minute device lease:
#  1. throughput at ResNet-50 with 16 tutorial workers on files rewritten at 299 px (the
#     database's size), and at ResNet-18 with 4 workers;
#  2. accuracy: the default recipe (resnet18 from scratch) on rdb-mini over seeds 0-2, and the
#     same with weight EMA (--ema-decay 0.998), through benchmarks/recipe_sweep.py (about 50 s
#     per run on an H200).
# Usage: DATA=path/to/rdb-mini OUT=results bash benchmarks/gpu_check.sh
set -u
DATA=${DATA:-devdata/rdb-mini}
OUT=${OUT:-gpu-results}
SEEDS=${SEEDS:-0 1 2}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
timeout 170 python3 benchmarks/throughput.py --device cuda --model resnet50 --image-size 224 \
  --batch-size 128 --workers 16 --n-images 21165 --epochs 3 --file-size 299 --data "$DATA" \
  > "$OUT/bench_r50_w16_299.log" 2>&1
timeout 100 python3 benchmarks/throughput.py --device cuda --model resnet18 --image-size 224 \
  --batch-size 128 --workers 4 --n-images 8192 --epochs 3 --data "$DATA" \
  > "$OUT/bench_r18_w4.log" 2>&1
tail -n 14 "$OUT"/bench_*.log
# shellcheck disable=SC2086
timeout 330 python3 benchmarks/recipe_sweep.py --data "$DATA" --out /tmp/sweep --budget 300 \
  --only default ema0.998 --seeds $SEEDS 2> "$OUT/sweep.err" | tee "$OUT/sweep.txt"
