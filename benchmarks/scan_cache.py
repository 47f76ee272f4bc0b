"""Scan-cache ratio: the second scan of an unchanged dataset vs the first (target <= 10%).

Both scans are the one ``prepare_split`` makes (``verify`` and ``near_duplicates``: every image
read, hashed, decoded and perceptually hashed the first time). The first scan starts from an
empty scan cache in a fresh folder; the OS page cache is not dropped, so the first scan is, if
anything, faster than a truly cold one and the ratio conservative.

Usage: python benchmarks/scan_cache.py --data ../shared/data/rdb-mini [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

from cxrlab.data.scan import scan_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--repeats", type=int, default=3, help="warm scans (the median is used)")
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        kw = dict(verify=True, near_duplicates=True, cache_dir=cache, workers=args.workers)
        start = time.perf_counter()
        first = scan_dataset(args.data, **kw)
        cold = time.perf_counter() - start
        warm = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            again = scan_dataset(args.data, **kw)
            warm.append(time.perf_counter() - start)
        assert again.index.equals(first.index), "the cached scan differs from the first"
    warm.sort()
    median = warm[len(warm) // 2]
    print(json.dumps({
        "images": len(first.index), "first_scan_s": round(cold, 3),
        "second_scan_s": [round(w, 3) for w in warm], "ratio": round(median / cold, 4),
        "target": 0.10,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
