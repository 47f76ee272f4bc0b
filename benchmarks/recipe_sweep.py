"""Small recipe sweep behind the default modern recipe (see README, "The default recipe").

Trains ResNet-18 from scratch on a dataset folder with a few batch-size / learning-rate / epoch
settings and prints validation macro-F1 and test accuracy for each, one line per run. On a GPU each
run takes well under a minute on rdb-mini; ``--budget`` stops starting new runs after that many
seconds.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

SETTINGS = [
    # (name, batch_size, lr, epochs, seed)
    ("b32-lr1e-3-e40", 32, 1e-3, 40, 0),
    ("b32-lr2e-3-e40", 32, 2e-3, 40, 0),
    ("b32-lr1e-3-e80", 32, 1e-3, 80, 0),
    ("b64-lr2e-3-e80", 64, 2e-3, 80, 0),
    ("b32-lr2e-3-e60-s1", 32, 2e-3, 60, 1),
    ("b32-lr2e-3-e60-s2", 32, 2e-3, 60, 2),
]


def main() -> None:
    from cxrlab.config import load_config
    from cxrlab.training import train
    from cxrlab.training.inference import predict_split

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, default=Path("/tmp/sweep"))
    p.add_argument("--model", default="resnet18")
    p.add_argument("--budget", type=float, default=240.0)
    args = p.parse_args()
    start = time.perf_counter()
    for name, batch, lr, epochs, seed in SETTINGS:
        if time.perf_counter() - start > args.budget:
            print(f"{name}: skipped (budget)")
            continue
        cfg = load_config(
            data=args.data, out=args.out / name, model=args.model, batch_size=batch, lr=lr,
            epochs=epochs, seed=seed, progress=False, overwrite=True, cache_dir=args.out / "cache",
        )  # fmt: skip
        t0 = time.perf_counter()
        result = train(cfg)
        test = predict_split(result.run_dir, "test")
        acc = float(np.mean(test["label"] == test["predicted"]))
        print(
            f"{name}: best val_f1 {result.best_score:.4f}  test accuracy {acc:.4f} "
            f"(n={len(test)})  {time.perf_counter() - t0:.0f} s",
            flush=True,
        )


if __name__ == "__main__":
    main()
