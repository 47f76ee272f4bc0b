#!/usr/bin/env bash
# The GPU figures of the README, in one call of under 10 minutes (a 15-minute device lease):
#  1. accuracy at 224 px by k-fold out-of-fold predictions (recipe_cv.py): the default recipe
#     (resnet18 from scratch) and refit-on-train+val over 5 folds with paired tests (RECIPES
#     overrides the list);
#  2. throughput at ResNet-50 with 16 tutorial workers on files rewritten at 299 px (the
#     database's size), which prints ratio_vs_ceiling.
# EXTRA=1 adds the 3-seed ensemble with TTA (SEEDS overrides), the seed CNN with the seed's recipe at its native 299 px, ResNet-18 throughput with
# 4 tutorial workers, and the plain tutorial recipe (plain_recipe.py) on the same splits.
# Usage: DATA=path/to/rdb-mini OUT=results bash benchmarks/gpu_check.sh
set -u
DATA=${DATA:-devdata/rdb-mini}
OUT=${OUT:-gpu-results}
SEEDS=${SEEDS:-0 1 2}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
RECIPES=${RECIPES:-default refit}
# shellcheck disable=SC2086
timeout 330 python3 benchmarks/recipe_cv.py --data "$DATA" --out "$OUT/rcv224" --size 224 \
  --epochs 30 --folds 5 --recipes $RECIPES 2> "$OUT/rcv.err" | tee "$OUT/rcv224.txt"
timeout 170 python3 benchmarks/throughput.py --device cuda --model resnet50 --image-size 224 \
  --batch-size 128 --workers 16 --n-images 21165 --epochs 3 --file-size 299 --data "$DATA" \
  > "$OUT/bench_r50_w16_299.log" 2>&1
tail -n 14 "$OUT/bench_r50_w16_299.log"
if [ "${EXTRA:-0}" = 1 ]; then
  # shellcheck disable=SC2086
  timeout 240 python3 benchmarks/recipe_cv.py --data "$DATA" --out "$OUT/rcv224" --size 224 \
    --epochs 30 --folds 5 --recipes default --seeds $SEEDS --ensemble --tta 1 8 \
    2>> "$OUT/rcv.err" | tee "$OUT/rcv224-ensemble.txt"
  timeout 200 python3 benchmarks/recipe_cv.py --data "$DATA" --out "$OUT/rcv299" --size 299 \
    --epochs 30 --folds 5 --recipes seed-cnn --reference seed-cnn 2>> "$OUT/rcv.err" \
    | tee "$OUT/rcv299-seed-cnn.txt"
  timeout 100 python3 benchmarks/throughput.py --device cuda --model resnet18 --image-size 224 \
    --batch-size 128 --workers 4 --n-images 8192 --epochs 3 --data "$DATA" \
    > "$OUT/bench_r18_w4.log" 2>&1
  tail -n 14 "$OUT/bench_r18_w4.log"
  # shellcheck disable=SC2086
  timeout 120 python3 benchmarks/plain_recipe.py --data "$DATA" --workers 16 --seeds $SEEDS \
    2> "$OUT/plain.err" | tee "$OUT/plain.txt"
fi
