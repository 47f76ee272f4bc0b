"""What preprocessing adds to a decode-cache build, and how fast the lung segmenter runs.

Builds the decode cache of the same files under each preprocessing (fresh cache folders, one
decoding process so the figures are CPU time of one core, interleaved repeats, median), and
times the segmenter's forward pass on real files. Usage:

    python benchmarks/preprocess_cost.py \
        --data ../shared/data/rdb-mini/COVID-19_Radiography_Dataset --n 1200 --size 64 \
        --repeats 2 [--segmenter SEG | --seg-size 128]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from cxrlab.config import PreprocessConfig
from cxrlab.data.cache import build_cache
from cxrlab.data.images import IMAGE_SUFFIXES, MASK_DIRS


def _files(root: Path, n: int) -> list[Path]:
    files = sorted(
        p for p in root.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and not set(p.parts) & MASK_DIRS
    )  # fmt: skip
    step = max(1, len(files) // n)
    return files[::step][:n]


def cache_cost(files, size, methods, repeats) -> dict:
    hashes = [f"{p}" for p in files]  # the key only needs to be unique per file list here
    times: dict[str, list[float]] = {m: [] for m in methods}
    for r in range(repeats):
        for method in methods[r % len(methods) :] + methods[: r % len(methods)]:  # rotate order
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.process_time()
                build_cache(files, hashes, size, cache_dir=tmp, workers=1,
                            preprocess=PreprocessConfig(method=method))  # fmt: skip
                times[method].append(time.process_time() - t0)
    base = statistics.median(times["none"])
    return {
        m: {"cpu_seconds": statistics.median(t), "added": statistics.median(t) / base - 1}
        for m, t in times.items()
    }


def enhancement_share(files, size, methods, repeats) -> dict:
    """Robust to a loaded machine: the minimum over repeats of the CPU time to decode the files
    (read + resize, the plain path) and, separately, to enhance the decoded images."""
    from cxrlab.data import preprocess as pp
    from cxrlab.data.images import load_for_model

    def best(fn) -> float:
        times = []
        for _ in range(repeats):
            t0 = time.process_time()
            fn()
            times.append(time.process_time() - t0)
        return min(times)

    decoded = [load_for_model(p, size) for p in files]
    decode = best(lambda: [load_for_model(p, size) for p in files])
    out = {"decode_cpu_seconds": decode}
    for method in methods:
        if method == "none":
            continue
        cfg = PreprocessConfig(method=method)
        t = best(lambda cfg=cfg: [pp.enhance(g, cfg) for g in decoded])
        out[method] = {"cpu_seconds": t, "added": t / decode}
    return out


def segmenter_speed(files, segmenter, seg_size, threads) -> dict:
    import torch

    from cxrlab.data.images import read_gray
    from cxrlab.segment.model import SegMeta, build_segmenter, load_segmenter, segment_grays

    torch.set_num_threads(threads)
    model = (
        load_segmenter(segmenter)
        if segmenter
        else build_segmenter(SegMeta(image_size=seg_size)).eval()
    )
    grays = [read_gray(p) for p in files]
    segment_grays(model, grays[:2])  # warm-up
    t0 = time.perf_counter()
    for g in grays:
        segment_grays(model, [g])
    wall = time.perf_counter() - t0
    return {"images": len(grays), "threads": threads, "image_size": int(model.meta.image_size),
            "images_per_second": len(grays) / wall}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--n", type=int, default=1200)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--methods", default="none,he,clahe,gamma,complement,bcet")
    ap.add_argument("--segmenter", type=Path, default=None)
    ap.add_argument("--seg-size", type=int, default=128)
    ap.add_argument("--seg-n", type=int, default=100)
    ap.add_argument("--threads", default="1,2")
    args = ap.parse_args()
    files = _files(args.data, args.n)
    cache = cache_cost(files, args.size, args.methods.split(","), args.repeats)
    out = {"n_files": len(files), "size": args.size, "cache": cache,
           "enhancement_share": enhancement_share(files, args.size, args.methods.split(","),
                                                  max(3, args.repeats))}  # fmt: skip
    if args.seg_n:
        out["segmenter"] = [
            segmenter_speed(files[: args.seg_n], args.segmenter, args.seg_size, int(t))
            for t in args.threads.split(",")
        ]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
