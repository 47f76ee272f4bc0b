#!/usr/bin/env bash
# The GPU figures of the README: one accuracy run of the default recipe on rdb-mini and the
# throughput benchmark at ResNet-50 (16 tutorial workers) and ResNet-18 (4 workers).
# Usage: DATA=path/to/rdb-mini OUT=results bash benchmarks/gpu_check.sh
set -u
DATA=${DATA:-devdata/rdb-mini}
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
timeout 200 python3 -m cxrlab train --data "$DATA" --model resnet18 --out /tmp/r18 \
  --cache-dir /tmp/cxrcache --seed 0 > "$OUT/train_r18.log" 2>&1
for f in metrics.json history.csv train_summary.json environment.json; do
  cp /tmp/r18/$f "$OUT/r18_$f" 2>/dev/null
done
timeout 170 python3 benchmarks/throughput.py --device cuda --model resnet50 --image-size 224 \
  --batch-size 128 --workers 16 --n-images 21165 --epochs 3 --data "$DATA" > "$OUT/bench_r50_w16.log" 2>&1
timeout 100 python3 benchmarks/throughput.py --device cuda --model resnet18 --image-size 224 \
  --batch-size 128 --workers 4 --n-images 8192 --epochs 3 --data "$DATA" > "$OUT/bench_r18_w4.log" 2>&1
tail -n 12 "$OUT"/bench_*.log
grep -h "accuracy\|Accuracy" "$OUT/train_r18.log" | head -5
