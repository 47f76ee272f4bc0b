"""Small recipe sweep behind the default modern recipe (see README, "The default recipe").

Trains ResNet-18 from scratch on a dataset folder with a few recipe settings and prints validation
macro-F1 and test accuracy for each, one line per run. On a GPU each run takes well under a minute
on rdb-mini; ``--budget`` stops starting new runs after that many seconds, and ``--only`` picks
settings by name. Any option of the config can be swept: add a line to ``SETTINGS``. On a CPU,
``--image-size 64 --epochs 40 --budget 100000`` gives a small proxy (about 10-15 min per run on 2
cores).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

SETTINGS = {
    # name: config overrides (unset options come from the model's recipe)
    "b32-lr1e-3-e40": dict(batch_size=32, lr=1e-3, epochs=40),
    "b32-lr2e-3-e40": dict(batch_size=32, lr=2e-3, epochs=40),
    "b32-lr1e-3-e80": dict(batch_size=32, lr=1e-3, epochs=80),
    "b64-lr2e-3-e80": dict(batch_size=64, lr=2e-3, epochs=80),
    "b32-lr2e-3-e60": dict(batch_size=32, lr=2e-3, epochs=60),
    "b32-lr1e-3-wd0.01-e40": dict(batch_size=32, lr=1e-3, weight_decay=0.01, epochs=40),
    "default": dict(),
    "ema0.998": dict(ema_decay=0.998),
    "e160": dict(epochs=160),
    "size288": dict(image_size=288),
    # plain_recipe.py's settings through cxrlab's pipeline (one-cycle with 30% warm-up, affine only)
    "plain-matched": dict(
        batch_size=32,
        lr=1e-3,
        weight_decay=0.01,
        epochs=40,
        warmup_epochs=12,
        augment=dict(rotate=10, shift=0.06, scale=0.1, brightness=0, contrast=0, gamma=0),
    ),
}


def main() -> None:
    from cxrlab.config import load_config
    from cxrlab.inference.split import predict_split
    from cxrlab.training import train

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, default=Path("/tmp/sweep"))
    p.add_argument("--model", default="resnet18")
    p.add_argument("--only", nargs="+", choices=sorted(SETTINGS), default=list(SETTINGS)[:5])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--budget", type=float, default=240.0)
    p.add_argument("--image-size", type=int, default=None, help="for every setting (CPU proxies)")
    p.add_argument("--epochs", type=int, default=None, help="for every setting (CPU proxies)")
    args = p.parse_args()
    overrides = {k: v for k, v in (("image_size", args.image_size), ("epochs", args.epochs)) if v}
    start = time.perf_counter()
    for seed in args.seeds:
        for name in args.only:
            tag = f"{name}-s{seed}"
            if time.perf_counter() - start > args.budget:
                print(f"{tag}: skipped (budget)", flush=True)
                continue
            cfg = load_config(
                data=args.data, out=args.out / tag, model=args.model, seed=seed,
                progress=False, overwrite=True, cache_dir=args.out / "cache",
                **{**SETTINGS[name], **overrides},
            )  # fmt: skip
            t0 = time.perf_counter()
            result = train(cfg)
            acc, n = {}, 0
            for ckpt in ("best", "last"):  # the chosen epoch's model, and the final epoch's
                file = result.run_dir / "checkpoints" / f"{ckpt}.ckpt"
                test = predict_split(result.run_dir, "test", checkpoint=file)
                acc[ckpt], n = float(np.mean(test["label"] == test["predicted"])), len(test)
            print(
                f"{tag}: best val_f1 {result.best_score:.4f}  test accuracy {acc['best']:.4f} "
                f"(last epoch's model {acc['last']:.4f}; n={n})  "
                f"{time.perf_counter() - t0:.0f} s",
                flush=True,
            )


if __name__ == "__main__":
    main()
